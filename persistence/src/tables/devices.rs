//! The device registry: vendor adapters (`vendor_adapters`), lock devices
//! (`lock_devices`) with the rooms each serves (`lock_device_rooms`), and each device's
//! last health reading.

use std::collections::BTreeMap;

use async_trait::async_trait;
use lockstep_domain::{
    BatteryThreshold, CommonArea, DeviceHealth, DeviceRef, LockDeviceId, PropertyId, RoomId,
    Timestamp, VendorAdapterId, VendorCode,
};

use crate::dialect::{corrupt, Stmt};
use crate::model::{
    context, AdapterRecord, Decommission, Device, DeviceHealthWrite, DeviceRecord, OutboxRow,
    StoredDeviceHealth,
};
use crate::tables::door_truth::decrypt_opt;
use crate::tables::OutboxTable;
use crate::tx::{Access, ReadWrite, Tx};
use crate::{StoreError, StoreResult};

/// Reads of a tenant's device registry.
#[async_trait]
pub trait ReadOnlyDeviceTable: Send {
    /// Live devices of a property serving any of `rooms`, by id, each with the rooms of
    /// `rooms` it serves (sorted); device refs decrypted.
    async fn devices_for_rooms(
        &mut self,
        property: &PropertyId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Device>>;

    /// Every room with a live lock at the property, sorted (master-key scope `rooms_all`).
    async fn property_rooms(&mut self, property: &PropertyId) -> StoreResult<Vec<RoomId>>;

    /// Live devices of a property that open a common area or the back of house, by id,
    /// each with its area and no rooms (master-key area scopes, migration 0016).
    async fn area_devices(&mut self, property: &PropertyId) -> StoreResult<Vec<Device>>;

    /// A page of a property's live devices (doors of rooms and of areas), by id after
    /// `after`, at most `limit`, each with every room it serves (sorted); device refs
    /// decrypted. D-2: a decommissioned device is never listed.
    async fn list_devices(
        &mut self,
        property: &PropertyId,
        after: Option<&LockDeviceId>,
        limit: i64,
    ) -> StoreResult<Vec<Device>>;

    /// The property of a live (not decommissioned) device; `None` if unknown or retired.
    async fn device_property(&mut self, device: &LockDeviceId) -> StoreResult<Option<PropertyId>>;

    /// What the registry holds of a device's health; `None` for an unknown device.
    async fn device_health(
        &mut self,
        device: &LockDeviceId,
    ) -> StoreResult<Option<StoredDeviceHealth>>;
}

/// Writes of a tenant's device registry.
#[async_trait]
pub trait DeviceTable: ReadOnlyDeviceTable {
    /// Creates or updates a vendor adapter; its config is encrypted, bound to the adapter.
    /// An id of another tenant is refused.
    async fn upsert_adapter(&mut self, adapter: &AdapterRecord) -> StoreResult<()>;

    /// Creates or updates a device and its room links; `true` when it registered a new
    /// device, whose `on_register` outbox rows are then written too. D-1: a second device
    /// with the same vendor ref in the property and vendor is
    /// [`StoreError::Constraint`] (unique on the ref's blind index).
    async fn upsert_device(&mut self, device: &DeviceRecord) -> StoreResult<bool>;

    /// Stores a device's health reading taken at `now`; `last_seen_at` moves only when
    /// the device is online. An unknown device is [`StoreError::Constraint`].
    async fn record_device_health(
        &mut self,
        write: &DeviceHealthWrite,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// D-4: sets a live device's battery threshold; `false` for an unknown or
    /// decommissioned device.
    async fn set_battery_threshold(
        &mut self,
        device: &LockDeviceId,
        threshold: BatteryThreshold,
    ) -> StoreResult<bool>;

    /// D-2: retires a device at `now` and writes `on_decommission` (its event) in the same
    /// transaction; a device already retired is left as it is and writes nothing.
    async fn decommission_device(
        &mut self,
        device: &LockDeviceId,
        now: Timestamp,
        on_decommission: &[OutboxRow],
    ) -> StoreResult<Decommission>;

    /// Counts one more probe of a live device refused by its vendor and answers the
    /// refusals in a row (a stored reading resets them); `None` for an unknown or
    /// decommissioned device.
    async fn record_probe_failure(&mut self, device: &LockDeviceId) -> StoreResult<Option<u32>>;
}

#[async_trait]
impl<A: Access> ReadOnlyDeviceTable for Tx<A> {
    async fn devices_for_rooms(
        &mut self,
        property: &PropertyId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Device>> {
        let d = self.conn.dialect();
        let mut rows = Vec::new();
        for chunk in d.chunks(rooms) {
            let ids: Vec<&str> = chunk.iter().map(|r| r.as_str()).collect();
            let stmt = Stmt::new(format!(
                "SELECT d.id, d.tenant_id, d.property_id, d.vendor, d.vendor_adapter_id, d.vendor_device_ref_ciphertext, d.vendor_device_ref_kms_version, d.label, d.area, r.room_id \
                 FROM lock_devices d JOIN lock_device_rooms r ON r.device_id = d.id AND r.tenant_id = d.tenant_id \
                 WHERE d.tenant_id = $1 AND d.property_id = $2 AND d.decommissioned_at IS NULL AND {} ORDER BY d.id, r.room_id",
                d.in_list("r.room_id", 3, ids.len())
            ))
            .bind(self.tenant)
            .bind(property.as_str())
            .list(&ids);
            rows.extend(self.conn.fetch_all(stmt).await?);
        }
        let mut by_id: BTreeMap<String, Device> = BTreeMap::new();
        for r in &rows {
            let id: String = r.get("id")?;
            let room = RoomId::parse(r.get("room_id")?)?;
            if let Some(d) = by_id.get_mut(&id) {
                d.rooms.push(room);
                continue;
            }
            let device_id = LockDeviceId::parse(&id)?;
            let dref = decrypt_opt(
                &self.cipher,
                r,
                "vendor_device_ref",
                &context::device_ref(&device_id),
            )?
            .ok_or_else(|| corrupt("device without a vendor device ref"))?;
            by_id.insert(
                id,
                Device {
                    id: device_id,
                    tenant_id: r.tenant("tenant_id")?,
                    property_id: PropertyId::parse(r.get("property_id")?)?,
                    vendor: VendorCode::parse(r.get("vendor")?)?,
                    vendor_adapter_id: VendorAdapterId::parse(r.get("vendor_adapter_id")?)?,
                    device_ref: DeviceRef::new(dref),
                    label: r.get("label")?,
                    rooms: vec![room],
                    area: area_of(r)?,
                },
            );
        }
        for d in by_id.values_mut() {
            // each chunk comes sorted; across chunks they need merging
            d.rooms.sort();
        }
        Ok(by_id.into_values().collect())
    }

    async fn property_rooms(&mut self, property: &PropertyId) -> StoreResult<Vec<RoomId>> {
        let stmt = Stmt::new(
            "SELECT DISTINCT r.room_id FROM lock_device_rooms r JOIN lock_devices d ON d.id = r.device_id AND d.tenant_id = r.tenant_id \
             WHERE d.tenant_id = $1 AND d.property_id = $2 AND d.decommissioned_at IS NULL ORDER BY r.room_id",
        )
        .bind(self.tenant)
        .bind(property.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| Ok(RoomId::parse(r.get("room_id")?)?))
            .collect()
    }

    async fn area_devices(&mut self, property: &PropertyId) -> StoreResult<Vec<Device>> {
        let stmt = Stmt::new(
            "SELECT id, tenant_id, property_id, vendor, vendor_adapter_id, vendor_device_ref_ciphertext, vendor_device_ref_kms_version, label, area \
             FROM lock_devices WHERE tenant_id = $1 AND property_id = $2 AND decommissioned_at IS NULL AND area IS NOT NULL ORDER BY id",
        )
        .bind(self.tenant)
        .bind(property.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                let device_id = LockDeviceId::parse(r.get("id")?)?;
                let dref = decrypt_opt(
                    &self.cipher,
                    r,
                    "vendor_device_ref",
                    &context::device_ref(&device_id),
                )?
                .ok_or_else(|| corrupt("device without a vendor device ref"))?;
                Ok(Device {
                    id: device_id,
                    tenant_id: r.tenant("tenant_id")?,
                    property_id: PropertyId::parse(r.get("property_id")?)?,
                    vendor: VendorCode::parse(r.get("vendor")?)?,
                    vendor_adapter_id: VendorAdapterId::parse(r.get("vendor_adapter_id")?)?,
                    device_ref: DeviceRef::new(dref),
                    label: r.get("label")?,
                    rooms: Vec::new(),
                    area: area_of(r)?,
                })
            })
            .collect()
    }

    async fn list_devices(
        &mut self,
        property: &PropertyId,
        after: Option<&LockDeviceId>,
        limit: i64,
    ) -> StoreResult<Vec<Device>> {
        let stmt = Stmt::new(
            "SELECT id, tenant_id, property_id, vendor, vendor_adapter_id, vendor_device_ref_ciphertext, vendor_device_ref_kms_version, label, area \
             FROM lock_devices WHERE tenant_id = $1 AND property_id = $2 AND decommissioned_at IS NULL \
             AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
        )
        .bind(self.tenant)
        .bind(property.as_str())
        .bind(after.map(LockDeviceId::as_str))
        .bind(limit);
        let rows = self.conn.fetch_all(stmt).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let device_id = LockDeviceId::parse(r.get("id")?)?;
            let dref = decrypt_opt(
                &self.cipher,
                r,
                "vendor_device_ref",
                &context::device_ref(&device_id),
            )?
            .ok_or_else(|| corrupt("device without a vendor device ref"))?;
            let stmt = Stmt::new(
                "SELECT room_id FROM lock_device_rooms WHERE tenant_id = $1 AND device_id = $2 ORDER BY room_id",
            )
            .bind(self.tenant)
            .bind(device_id.as_str());
            let rooms = self
                .conn
                .fetch_all(stmt)
                .await?
                .iter()
                .map(|x| Ok(RoomId::parse(x.get("room_id")?)?))
                .collect::<StoreResult<Vec<_>>>()?;
            out.push(Device {
                id: device_id,
                tenant_id: r.tenant("tenant_id")?,
                property_id: PropertyId::parse(r.get("property_id")?)?,
                vendor: VendorCode::parse(r.get("vendor")?)?,
                vendor_adapter_id: VendorAdapterId::parse(r.get("vendor_adapter_id")?)?,
                device_ref: DeviceRef::new(dref),
                label: r.get("label")?,
                rooms,
                area: area_of(r)?,
            });
        }
        Ok(out)
    }

    async fn device_property(&mut self, device: &LockDeviceId) -> StoreResult<Option<PropertyId>> {
        let stmt = Stmt::new(
            "SELECT property_id FROM lock_devices WHERE tenant_id = $1 AND id = $2 AND decommissioned_at IS NULL",
        )
        .bind(self.tenant)
        .bind(device.as_str());
        let row = self.conn.fetch_optional(stmt).await?;
        row.map(|r| Ok(PropertyId::parse(r.get("property_id")?)?))
            .transpose()
    }

    async fn device_health(
        &mut self,
        device: &LockDeviceId,
    ) -> StoreResult<Option<StoredDeviceHealth>> {
        let stmt = Stmt::new(
            "SELECT online, battery_percent, battery_low_threshold, firmware, clock_skew_ms, last_seen_at, health_probed_at, decommissioned_at \
             FROM lock_devices WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant)
        .bind(device.as_str());
        let row = self.conn.fetch_optional(stmt).await?;
        let Some(r) = row else { return Ok(None) };
        let last = match r.opt_ts("health_probed_at")? {
            None => None,
            Some(_) => Some(DeviceHealth::new(
                r.get("online")?,
                r.opt_small("battery_percent")?,
                r.get("firmware")?,
                r.get("clock_skew_ms")?,
            )?),
        };
        Ok(Some(StoredDeviceHealth {
            last,
            threshold: BatteryThreshold::new(r.small("battery_low_threshold")?)?,
            decommissioned: r.opt_ts("decommissioned_at")?.is_some(),
            last_seen_at: r.opt_ts("last_seen_at")?,
        }))
    }
}

#[async_trait]
impl DeviceTable for Tx<ReadWrite> {
    async fn upsert_adapter(&mut self, a: &AdapterRecord) -> StoreResult<()> {
        self.own(a.tenant_id, "vendor adapter")?;
        let (ct, ver) = self.cipher.encrypt(
            a.config.to_string().as_bytes(),
            &context::adapter_config(&a.id),
        )?;
        let guard = self.conn.dialect().upsert_guard("vendor_adapters");
        let stmt = Stmt::new(format!(
            "INSERT INTO vendor_adapters (id, tenant_id, property_id, vendor, environment, capabilities, config_ciphertext, config_kms_version, enabled, precedence, created_at, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$11) \
             ON CONFLICT (id) DO UPDATE SET capabilities = excluded.capabilities, config_ciphertext = excluded.config_ciphertext, \
             config_kms_version = excluded.config_kms_version, enabled = excluded.enabled, precedence = excluded.precedence, \
             updated_at = excluded.updated_at{guard}"
        ))
        .bind(a.id.as_str())
        .bind(self.tenant)
        .bind(a.property_id.as_str())
        .bind(a.vendor.as_str())
        .bind(&a.environment)
        .bind(&a.capabilities)
        .bind(ct)
        .bind(ver)
        .bind(a.enabled)
        .bind(a.precedence)
        .bind(a.now);
        let n = self.conn.execute(stmt).await?;
        if n != 1 {
            return Err(StoreError::Constraint(
                "vendor adapter id belongs to another tenant".into(),
            ));
        }
        Ok(())
    }

    async fn upsert_device(&mut self, d: &DeviceRecord) -> StoreResult<bool> {
        self.own(d.tenant_id, "lock device")?;
        let (ct, ver) = self.cipher.encrypt(
            d.device_ref.expose().as_bytes(),
            &context::device_ref(&d.id),
        )?;
        let ref_hash = self
            .cipher
            .blind_index(context::DEVICE_REF_INDEX, d.device_ref.expose().as_bytes());
        let stmt = Stmt::new(
            "SELECT EXISTS (SELECT 1 FROM lock_devices WHERE tenant_id = $1 AND id = $2) AS known",
        )
        .bind(self.tenant)
        .bind(d.id.as_str());
        let known: bool = self.conn.fetch_one(stmt).await?.get("known")?;
        let guard = self.conn.dialect().upsert_guard("lock_devices");
        let stmt = Stmt::new(format!(
            "INSERT INTO lock_devices (id, tenant_id, property_id, vendor, vendor_adapter_id, vendor_device_ref_ciphertext, vendor_device_ref_kms_version, label, capabilities, registered_at, vendor_device_ref_hash, area, battery_low_threshold) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) \
             ON CONFLICT (id) DO UPDATE SET label = excluded.label, capabilities = excluded.capabilities, area = excluded.area, vendor_device_ref_ciphertext = excluded.vendor_device_ref_ciphertext, \
             vendor_device_ref_kms_version = excluded.vendor_device_ref_kms_version, vendor_device_ref_hash = excluded.vendor_device_ref_hash{guard}"
        ))
        .bind(d.id.as_str())
        .bind(self.tenant)
        .bind(d.property_id.as_str())
        .bind(d.vendor.as_str())
        .bind(d.vendor_adapter_id.as_str())
        .bind(ct)
        .bind(ver)
        .bind(&d.label)
        .bind(&d.capabilities)
        .bind(d.now)
        .bind(ref_hash)
        .bind(d.area.map(|a| a.as_str()))
        // D-4: 25 % until the device is given its own (SQLite's column default is still
        // migration 0006's 20); an update keeps the device's threshold
        .bind(Some(i16::from(BatteryThreshold::DEFAULT.percent())));
        let n = self.conn.execute(stmt).await?;
        if n != 1 {
            return Err(StoreError::Constraint(
                "lock device id belongs to another tenant".into(),
            ));
        }
        let stmt =
            Stmt::new("DELETE FROM lock_device_rooms WHERE tenant_id = $1 AND device_id = $2")
                .bind(self.tenant)
                .bind(d.id.as_str());
        self.conn.execute(stmt).await?;
        for room in &d.rooms {
            let stmt = Stmt::new(
                "INSERT INTO lock_device_rooms (tenant_id, device_id, room_id) VALUES ($1, $2, $3)",
            )
            .bind(self.tenant)
            .bind(d.id.as_str())
            .bind(room.as_str());
            self.conn.execute(stmt).await?;
        }
        if !known {
            self.append_outbox(&d.on_register).await?;
        }
        Ok(!known)
    }

    async fn record_device_health(
        &mut self,
        h: &DeviceHealthWrite,
        now: Timestamp,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE lock_devices SET online = $3, battery_percent = $4, firmware = $5, clock_skew_ms = $6, health_probed_at = $7, probe_failures = 0, \
             last_seen_at = CASE WHEN $3 THEN $7 ELSE last_seen_at END WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant)
        .bind(h.device_id.as_str())
        .bind(h.health.online)
        .bind(h.health.battery_percent.map(i16::from))
        .bind(&h.health.firmware)
        .bind(h.health.clock_skew_ms)
        .bind(now);
        let n = self.conn.execute(stmt).await?;
        if n != 1 {
            return Err(StoreError::Constraint("unknown lock device".into()));
        }
        Ok(())
    }

    async fn set_battery_threshold(
        &mut self,
        device: &LockDeviceId,
        threshold: BatteryThreshold,
    ) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "UPDATE lock_devices SET battery_low_threshold = $3 WHERE tenant_id = $1 AND id = $2 AND decommissioned_at IS NULL",
        )
        .bind(self.tenant)
        .bind(device.as_str())
        .bind(Some(i16::from(threshold.percent())));
        Ok(self.conn.execute(stmt).await? == 1)
    }

    async fn decommission_device(
        &mut self,
        device: &LockDeviceId,
        now: Timestamp,
        on_decommission: &[OutboxRow],
    ) -> StoreResult<Decommission> {
        let stmt = Stmt::new(
            "UPDATE lock_devices SET decommissioned_at = $3 WHERE tenant_id = $1 AND id = $2 AND decommissioned_at IS NULL",
        )
        .bind(self.tenant)
        .bind(device.as_str())
        .bind(now);
        if self.conn.execute(stmt).await? == 1 {
            self.append_outbox(on_decommission).await?;
            return Ok(Decommission::Done(now));
        }
        let stmt = Stmt::new(
            "SELECT decommissioned_at FROM lock_devices WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant)
        .bind(device.as_str());
        Ok(match self.conn.fetch_optional(stmt).await? {
            None => Decommission::Unknown,
            Some(r) => match r.opt_ts("decommissioned_at")? {
                Some(at) => Decommission::Already(at),
                // the row was there and live, yet the update missed it: not ours to guess
                None => return Err(corrupt("a live device the decommission did not change")),
            },
        })
    }

    async fn record_probe_failure(&mut self, device: &LockDeviceId) -> StoreResult<Option<u32>> {
        // capped, so a lock gone for months cannot overflow the column
        let stmt = Stmt::new(
            "UPDATE lock_devices SET probe_failures = CASE WHEN probe_failures < 10000 THEN probe_failures + 1 ELSE probe_failures END \
             WHERE tenant_id = $1 AND id = $2 AND decommissioned_at IS NULL RETURNING probe_failures",
        )
        .bind(self.tenant)
        .bind(device.as_str());
        let row = self.conn.fetch_optional(stmt).await?;
        row.map(|r| Ok(u32::try_from(r.small("probe_failures")?).unwrap_or(0)))
            .transpose()
    }
}

/// A row's `area` (migration 0016); the CHECK keeps it to the spec's six.
fn area_of(r: &crate::dialect::Row) -> StoreResult<Option<CommonArea>> {
    let area: Option<String> = r.get("area")?;
    area.as_deref()
        .map(CommonArea::parse)
        .transpose()
        .map_err(|_| corrupt("lock device with an unknown area"))
}
