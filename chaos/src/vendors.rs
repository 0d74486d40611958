//! The five vendors' simulators from `lockstep-vendors`, hosted in this process with their
//! door journals on, behind one uniform handle ([`VendorSim`]): start one with N devices,
//! write the `[[properties.adapters]]` TOML that points Lockstep at it (README: the keys of
//! each vendor), inject faults, and read what every device accepts now and the journal of
//! grants, changes and removals, all through the vendor-neutral
//! [`DoorObject`]/[`DoorChange`] (a credential appears under its label, the `key_…` id).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::bail;
use lockstep_domain::{KeyCredentialKind, SystemClock};
use lockstep_vendors::{brivo, kisi, salto, ttlock, vostio, LockPort};

pub use lockstep_vendors::ttlock::simulator::journal::{
    DoorChange, DoorObject, DoorOp, DEFAULT_JOURNAL_CAPACITY,
};

/// A lock vendor Lockstep speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vendor {
    /// TTLock (PINs on keypad locks).
    Ttlock,
    /// Salto KS (PINs on keypad escutcheons).
    Salto,
    /// ASSA ABLOY Vostio (mobile keys).
    Vostio,
    /// Kisi (mobile keys).
    Kisi,
    /// Brivo (PINs).
    Brivo,
}

impl Vendor {
    /// Every vendor.
    pub const ALL: [Vendor; 5] = [
        Vendor::Ttlock,
        Vendor::Salto,
        Vendor::Vostio,
        Vendor::Kisi,
        Vendor::Brivo,
    ];

    /// The short name used on the command line and in ids (`ttlock`, `vostio`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Ttlock => "ttlock",
            Vendor::Salto => "salto",
            Vendor::Vostio => "vostio",
            Vendor::Kisi => "kisi",
            Vendor::Brivo => "brivo",
        }
    }

    /// The `vendor` key of Lockstep's adapter config.
    pub fn config_code(self) -> &'static str {
        match self {
            Vendor::Vostio => "assa-abloy",
            other => other.name(),
        }
    }

    /// Parses [`Vendor::name`] (or [`Vendor::config_code`]).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match Self::ALL
            .iter()
            .find(|v| v.name() == s || v.config_code() == s)
        {
            Some(v) => Ok(*v),
            None => bail!("unknown vendor {s:?} (ttlock, salto, vostio, kisi, brivo)"),
        }
    }

    /// The key kind a property on this vendor prefers in the chaos runs: a PIN where the
    /// vendor has keypads, else a mobile key.
    pub fn preferred_kind(self) -> KeyCredentialKind {
        match self {
            Vendor::Ttlock | Vendor::Salto | Vendor::Brivo => KeyCredentialKind::PinCode,
            Vendor::Vostio | Vendor::Kisi => KeyCredentialKind::MobileApp,
        }
    }

    /// The policy's fallback (K-1 wants one): the other of PIN and mobile key.
    pub fn fallback_kind(self) -> KeyCredentialKind {
        match self.preferred_kind() {
            KeyCredentialKind::PinCode => KeyCredentialKind::MobileApp,
            _ => KeyCredentialKind::PinCode,
        }
    }
}

/// Faults every simulator understands (each has more of its own: reach them through
/// [`VendorSim::ttlock`] and its siblings).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Every call answers 503.
    pub outage: bool,
    /// Fixed delay before each call, ms.
    pub latency_ms: u64,
    /// Extra random delay, uniform in `0..=latency_jitter_ms`.
    pub latency_jitter_ms: u64,
    /// Share of calls answered 500 without being applied.
    pub error_rate: f64,
    /// Share of writes applied but answered 500 (the vendor acted, Lockstep never heard).
    pub lose_response_rate: f64,
}

enum Running {
    Ttlock(ttlock::RunningSimulator),
    Salto(salto::RunningSimulator),
    Vostio(vostio::RunningSimulator),
    Kisi(kisi::RunningSimulator),
    Brivo(brivo::RunningSimulator),
}

/// One running simulator with its devices; stopped when dropped.
pub struct VendorSim {
    vendor: Vendor,
    running: Running,
    devices: Vec<String>,
}

impl std::fmt::Debug for VendorSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorSim")
            .field("vendor", &self.vendor)
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

/// Applies a [`Faults`] to a simulator's own fault struct (they share these fields).
macro_rules! apply_faults {
    ($sim:expr, $f:expr) => {
        $sim.handle().update_faults(|x| {
            x.outage = $f.outage;
            x.latency_ms = $f.latency_ms;
            x.latency_jitter_ms = $f.latency_jitter_ms;
            x.error_rate = $f.error_rate;
            x.lose_response_rate = $f.lose_response_rate;
        })
    };
}

/// Runs `$body` with `$h` bound to the running simulator's handle, whatever the vendor
/// (the handles share these methods but no trait).
macro_rules! with_handle {
    ($running:expr, $h:ident => $body:expr) => {
        match $running {
            Running::Ttlock(s) => {
                let $h = s.handle();
                $body
            }
            Running::Salto(s) => {
                let $h = s.handle();
                $body
            }
            Running::Vostio(s) => {
                let $h = s.handle();
                $body
            }
            Running::Kisi(s) => {
                let $h = s.handle();
                $body
            }
            Running::Brivo(s) => {
                let $h = s.handle();
                $body
            }
        }
    };
}

impl VendorSim {
    /// Starts `vendor`'s simulator on a free port of 127.0.0.1 with `devices` devices
    /// (numbered from `first`), its door journal on.
    pub fn start(vendor: Vendor, devices: usize, first: usize) -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let nums: Vec<usize> = (first..first + devices).collect();
        let (running, devices) = match vendor {
            Vendor::Ttlock => {
                let s = ttlock::TtlockSimulator::start(any)?;
                for n in &nums {
                    s.handle().add_lock(*n as i64);
                }
                let ids = nums.iter().map(|n| n.to_string()).collect();
                (Running::Ttlock(s), ids)
            }
            Vendor::Salto => {
                let s = salto::SaltoSimulator::start(any)?;
                let ids: Vec<String> = nums.iter().map(|n| format!("salto-lock-{n}")).collect();
                for id in &ids {
                    s.handle().add_lock(id);
                }
                (Running::Salto(s), ids)
            }
            Vendor::Vostio => {
                let s = vostio::VostioSimulator::start(any)?;
                let ids: Vec<String> = nums.iter().map(|n| format!("door-{n}")).collect();
                for id in &ids {
                    s.handle().add_door(vostio::simulator::SIM_ENVIRONMENT, id);
                }
                (Running::Vostio(s), ids)
            }
            Vendor::Kisi => {
                let s = kisi::KisiSimulator::start(any)?;
                // one group per door, granting just that lock (the adapter's device ref)
                for n in &nums {
                    s.handle().add_group_lock(*n as i64, *n as i64);
                }
                let ids = nums.iter().map(|n| format!("{n}:{n}")).collect();
                (Running::Kisi(s), ids)
            }
            Vendor::Brivo => {
                let s = brivo::BrivoSimulator::start(any)?;
                for n in &nums {
                    s.handle().add_access_point(*n as i64);
                }
                let ids = nums.iter().map(|n| n.to_string()).collect();
                (Running::Brivo(s), ids)
            }
        };
        let me = Self {
            vendor,
            running,
            devices,
        };
        with_handle!(&me.running, h => h.enable_journal(DEFAULT_JOURNAL_CAPACITY));
        Ok(me)
    }

    /// Which vendor.
    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The devices' refs as Lockstep's config names them (`vendor_device_ref`).
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        match &self.running {
            Running::Ttlock(s) => s.base_url(),
            Running::Salto(s) => s.base_url(),
            Running::Vostio(s) => s.base_url(),
            Running::Kisi(s) => s.base_url(),
            Running::Brivo(s) => s.base_url(),
        }
    }

    /// The `[[properties.adapters]]` table (id `adapter_id`) for this simulator's default
    /// account, without a rate limit (a test account).
    pub fn adapter_toml(&self, adapter_id: &str) -> String {
        let base = self.base_url();
        let keys = match self.vendor {
            Vendor::Ttlock => format!(
                "api_base_url = \"{base}\"\nclient_id = \"{}\"\nclient_secret = {{ value = \"{}\" }}\nusername = \"{}\"\npassword = {{ value = \"{}\" }}\n",
                ttlock::simulator::SIM_CLIENT_ID,
                ttlock::simulator::SIM_CLIENT_SECRET,
                ttlock::simulator::SIM_USERNAME,
                ttlock::simulator::SIM_PASSWORD,
            ),
            Vendor::Salto => format!(
                "api_base_url = \"{base}\"\nauth_base_url = \"{base}\"\nsite_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ value = \"{}\" }}\nusername = \"{}\"\npassword = {{ value = \"{}\" }}\n",
                salto::simulator::SIM_SITE_ID,
                salto::simulator::SIM_CLIENT_ID,
                salto::simulator::SIM_CLIENT_SECRET,
                salto::simulator::SIM_USERNAME,
                salto::simulator::SIM_PASSWORD,
            ),
            Vendor::Vostio => format!(
                "api_base_url = \"{base}/api\"\nauth_base_url = \"{base}/oauth2/token\"\nsite_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ value = \"{}\" }}\n",
                vostio::simulator::SIM_ENVIRONMENT,
                vostio::simulator::SIM_CLIENT_ID,
                vostio::simulator::SIM_CLIENT_SECRET,
            ),
            Vendor::Kisi => format!(
                "api_base_url = \"{base}\"\napi_key = {{ value = \"{}\" }}\n",
                kisi::simulator::SIM_API_KEY,
            ),
            Vendor::Brivo => format!(
                "api_base_url = \"{base}\"\nauth_base_url = \"{base}\"\napi_key = {{ value = \"{}\" }}\nclient_id = \"{}\"\nclient_secret = {{ value = \"{}\" }}\nusername = \"{}\"\npassword = {{ value = \"{}\" }}\naccess_schedule_id = {}\n",
                brivo::simulator::SIM_API_KEY,
                brivo::simulator::SIM_CLIENT_ID,
                brivo::simulator::SIM_CLIENT_SECRET,
                brivo::simulator::SIM_USERNAME,
                brivo::simulator::SIM_PASSWORD,
                brivo::simulator::SIM_SCHEDULE_ID,
            ),
        };
        format!(
            "\n[[properties.adapters]]\nid = \"{adapter_id}\"\nvendor = \"{}\"\n{keys}rate_limit_per_min = 0\n",
            self.vendor.config_code()
        )
    }

    /// The vendor's adapter on this simulator's default account, as Lockstep builds it (for
    /// checks from outside Lockstep: what a vendor call does at the doors).
    pub fn port(&self) -> anyhow::Result<Arc<dyn LockPort>> {
        let clock = Arc::new(SystemClock);
        let err = |e: lockstep_vendors::VendorError| anyhow::anyhow!("building the adapter: {e}");
        Ok(match &self.running {
            Running::Ttlock(s) => Arc::new(
                ttlock::TtlockAdapter::new(s.default_adapter_config(), clock).map_err(err)?,
            ),
            Running::Salto(s) => {
                Arc::new(salto::SaltoAdapter::new(s.default_adapter_config(), clock).map_err(err)?)
            }
            Running::Vostio(s) => Arc::new(
                vostio::VostioAdapter::new(s.default_adapter_config(), clock).map_err(err)?,
            ),
            Running::Kisi(s) => {
                Arc::new(kisi::KisiAdapter::new(s.default_adapter_config(), clock).map_err(err)?)
            }
            Running::Brivo(s) => {
                Arc::new(brivo::BrivoAdapter::new(s.default_adapter_config(), clock).map_err(err)?)
            }
        })
    }

    /// Replaces the shared faults (the simulator's other switches are left alone).
    pub fn set_faults(&self, f: &Faults) {
        match &self.running {
            Running::Ttlock(s) => apply_faults!(s, f),
            Running::Salto(s) => apply_faults!(s, f),
            Running::Vostio(s) => apply_faults!(s, f),
            Running::Kisi(s) => apply_faults!(s, f),
            Running::Brivo(s) => apply_faults!(s, f),
        }
    }

    /// Every labelled credential every device accepts now.
    pub fn door_view(&self) -> Vec<DoorObject> {
        with_handle!(&self.running, h => h.door_view())
    }

    /// Writes the simulator applied but answered with a 500 (its `lost_responses`
    /// counter).
    pub fn lost_responses(&self) -> u64 {
        with_handle!(&self.running, h => h.counters().lost_responses)
    }

    /// The journal from `seq` on (1: everything kept).
    pub fn journal_since(&self, seq: u64) -> Vec<DoorChange> {
        with_handle!(&self.running, h => h.journal_since(seq))
    }

    /// The TTLock simulator's handle, for switches of its own (`None` for another vendor).
    pub fn ttlock(&self) -> Option<ttlock::SimHandle> {
        match &self.running {
            Running::Ttlock(s) => Some(s.handle()),
            _ => None,
        }
    }

    /// The Salto simulator's handle (`None` for another vendor).
    pub fn salto(&self) -> Option<salto::SimHandle> {
        match &self.running {
            Running::Salto(s) => Some(s.handle()),
            _ => None,
        }
    }

    /// The Vostio simulator's handle (`None` for another vendor).
    pub fn vostio(&self) -> Option<vostio::SimHandle> {
        match &self.running {
            Running::Vostio(s) => Some(s.handle()),
            _ => None,
        }
    }

    /// The Kisi simulator's handle (`None` for another vendor).
    pub fn kisi(&self) -> Option<kisi::SimHandle> {
        match &self.running {
            Running::Kisi(s) => Some(s.handle()),
            _ => None,
        }
    }

    /// The Brivo simulator's handle (`None` for another vendor).
    pub fn brivo(&self) -> Option<brivo::SimHandle> {
        match &self.running {
            Running::Brivo(s) => Some(s.handle()),
            _ => None,
        }
    }
}
