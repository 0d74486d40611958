//! Each vendor's simulator, driven by Lockstep's own adapter, shows the credential in its
//! door view under the label and journals its grant and removal: the checker's eyes.

use lockstep_chaos::vendors::{DoorOp, Vendor, VendorSim};
use lockstep_domain::{DeviceRef, KeyCredentialKind, Pin, ValidityWindow};
use lockstep_vendors::IssueRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_simulator_journals_an_adapter_issue_and_revoke_under_the_label() -> anyhow::Result<()>
{
    let from = chrono::Utc::now() + chrono::Duration::days(3);
    let from = from - chrono::Duration::nanoseconds(i64::from(from.timestamp_subsec_nanos()));
    let until = from + chrono::Duration::hours(21);
    for (i, vendor) in Vendor::ALL.into_iter().enumerate() {
        let sim = VendorSim::start(vendor, 2, 100 + i * 10)?;
        let port = sim.port()?;
        let kind = vendor.preferred_kind();
        let label = format!("key_01J{:0>23}", i + 1);
        let device = sim.devices()[1].clone();
        let req = IssueRequest {
            device: DeviceRef::new(device.clone()),
            kind,
            label: label.clone(),
            pin: (kind == KeyCredentialKind::PinCode)
                .then(|| Pin::parse(&format!("48{i}913")))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            card_number: None,
            validity: ValidityWindow::new(from, until).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        };
        let vendor_ref = port
            .issue(&req)
            .await
            .map_err(|e| anyhow::anyhow!("{vendor:?} issue: {e}"))?;
        let view = sim.door_view();
        assert_eq!(view.len(), 1, "{vendor:?}: {view:?}");
        let o = &view[0];
        assert_eq!(
            (o.device.as_str(), o.label.as_str(), o.kind),
            (device.as_str(), label.as_str(), kind),
            "{vendor:?}"
        );
        assert_eq!(
            (o.valid_from, o.valid_until),
            (Some(from), Some(until)),
            "{vendor:?}"
        );

        port.revoke(&req.device, &vendor_ref)
            .await
            .map_err(|e| anyhow::anyhow!("{vendor:?} revoke: {e}"))?;
        assert!(
            sim.door_view().is_empty(),
            "{vendor:?}: {:?}",
            sim.door_view()
        );
        let ops: Vec<(DoorOp, u32)> = sim
            .journal_since(1)
            .iter()
            .filter(|c| c.label == label && c.device == device)
            .map(|c| (c.op, c.remaining))
            .collect();
        assert_eq!(
            ops.first(),
            Some(&(DoorOp::Grant, 1)),
            "{vendor:?}: {ops:?}"
        );
        assert_eq!(
            ops.last(),
            Some(&(DoorOp::Remove, 0)),
            "{vendor:?}: {ops:?}"
        );
        assert!(
            !ops.iter().any(|(op, n)| *op == DoorOp::Grant && *n > 1),
            "{vendor:?}: one object only: {ops:?}"
        );
    }
    Ok(())
}
