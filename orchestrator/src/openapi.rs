//! The API's one table of routes: the router is built from it (`http::configure` registers
//! exactly these, by operation id) and the OpenAPI document is generated from it, so the
//! two cannot drift. `GET /api/v1/openapi.json` serves the document; `docs/openapi.json` is
//! its committed copy, which a test keeps equal to the generated one.

use serde_json::{json, Map, Value};

/// How a route is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Open (health, readiness, metrics, this document).
    None,
    /// A bearer token with one of the roles.
    Bearer(&'static [&'static str]),
    /// The vendor, through the URL token.
    WebhookToken,
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// `get`, `post`.
    pub method: &'static str,
    /// Path with `{param}`s (the same syntax in actix and OpenAPI).
    pub path: &'static str,
    /// Operation id: how `http::configure` finds the handler.
    pub op: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Who may call it.
    pub auth: Auth,
    /// Query parameters.
    pub query: &'static [&'static str],
    /// The JSON body's fields, if it takes one (`None`: no body).
    pub body: Option<&'static [&'static str]>,
    /// Documented statuses, success first.
    pub responses: &'static [u16],
    /// Served in embedded mode only.
    pub embedded_only: bool,
}

const ANY: &[&str] = &["operator", "admin", "service"];
const READ_ERRORS: &[u16] = &[200, 400, 401, 403, 404, 422, 503];
const WRITE_ERRORS: &[u16] = &[200, 202, 400, 401, 403, 404, 413, 422, 503];

/// Every route of the service.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "get",
        path: "/healthz",
        op: "healthz",
        summary: "Liveness",
        auth: Auth::None,
        query: &[],
        body: None,
        responses: &[200],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/readyz",
        op: "readyz",
        summary: "Readiness: the store answers and the bus is connected",
        auth: Auth::None,
        query: &[],
        body: None,
        responses: &[200, 503],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/metrics",
        op: "metrics",
        summary: "Prometheus metrics",
        auth: Auth::None,
        query: &[],
        body: None,
        responses: &[200],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/openapi.json",
        op: "openapi",
        summary: "This document",
        auth: Auth::None,
        query: &[],
        body: None,
        responses: &[200],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/status",
        op: "nodeStatus",
        summary: "This node's state for operators (node-wide, no tenant's ids): readiness, vendor breakers, accounts held, mailbox backlog and oldest due timer, outbox lag and unroutable rows, door truth to confirm, partitions owned of those configured, relay connections",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: None,
        responses: &[200, 401, 403],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/key-credentials",
        op: "listCredentials",
        summary: "List credentials by property, reservation, guest, staff member, state, room and opensAt (who can open a room then), a cursor page at a time",
        auth: Auth::Bearer(ANY),
        query: &[
            "propertyId",
            "reservationId",
            "guestId",
            "staffUserId",
            "state",
            "roomId",
            "opensAt",
            "limit",
            "cursor",
        ],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/key-credentials",
        op: "issueCredential",
        summary: "Issue a guest's key by hand: the stay's reservation.confirmed, through the partitions",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: Some(&[
            "propertyId",
            "reservationId",
            "revision",
            "guestId",
            "roomIds",
            "validFrom",
            "validUntil",
        ]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/key-credentials/{id}",
        op: "getCredential",
        summary: "One credential with its door truth; never a vendorRef or PIN",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "patch",
        path: "/api/v1/key-credentials/{id}",
        op: "updateCredential",
        summary: "Move an active or suspended key's end (K-2) and/or rooms",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: Some(&["validUntil", "roomIds"]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/key-credentials/{id}/audit",
        op: "credentialAudit",
        summary: "The credential's audit trail in chain order",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/key-credentials/{id}/pin",
        op: "revealPin",
        summary: "Reveal an active PIN (audited, no-store)",
        auth: Auth::Bearer(&["service", "operator"]),
        query: &[],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/key-credentials/{id}/revoke",
        op: "revokeCredential",
        summary: "Revoke with a reason (checkout, cancellation, lost, security)",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: Some(&["reason"]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/key-credentials/{id}/suspend",
        op: "suspendCredential",
        summary: "Suspend an active credential (reason defaults to manual)",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: Some(&["reason"]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/key-credentials/{id}/unsuspend",
        op: "unsuspendCredential",
        summary: "Unsuspend (only from suspended)",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: Some(&[]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/key-credentials/{id}/replace",
        op: "replaceCredential",
        summary: "Lost key: revoke and re-issue in one step",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: Some(&[]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/lock-devices",
        op: "listDevices",
        summary: "A property's live devices with their last health reading, a page at a time (D-2: never a decommissioned one)",
        auth: Auth::Bearer(ANY),
        query: &["propertyId", "limit", "cursor"],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/lock-devices",
        op: "registerDevice",
        summary: "Register a lock paired at a property (the vendor must know it; D-1)",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: Some(&[
            "propertyId",
            "vendorAdapterId",
            "vendorDeviceRef",
            "label",
            "roomIds",
            "area",
        ]),
        responses: &[201, 400, 401, 403, 404, 409, 413, 422, 502],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/lock-devices/{id}/health",
        op: "deviceHealth",
        summary: "Probe a device now (online, battery, clockSkewMs); a decommissioned one reads offline without a vendor call (D-2)",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: None,
        responses: &[200, 401, 403, 404, 422, 502],
        embedded_only: false,
    },
    Endpoint {
        method: "patch",
        path: "/api/v1/lock-devices/{id}",
        op: "updateDevice",
        summary: "Set a device's battery threshold: battery.lowThresholdPercent, 5 to 50 (D-4)",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: Some(&["battery"]),
        responses: &[200, 400, 401, 403, 404, 413, 422, 503],
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/lock-devices/{id}/decommission",
        op: "decommissionDevice",
        summary: "Retire a device (D-2): no longer listed, offline, no new keys; lock.device.decommissioned.v1 once",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: None,
        responses: &[200, 401, 403, 404, 422, 503],
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/master-keys",
        op: "issueMasterKey",
        summary: "Issue a shift-bound, scope-bounded staff master key (travels as the shift's start)",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: Some(&[
            "propertyId",
            "shiftId",
            "staffUserId",
            "scope",
            "validFrom",
            "validUntil",
        ]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/master-keys/{id}/revoke",
        op: "revokeMasterKey",
        summary: "Revoke a master key (reason expired at shift end, or security)",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: Some(&["reason"]),
        responses: WRITE_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/vendor-adapters",
        op: "listAdapters",
        summary: "Configured adapters and capabilities; admins also get webhook paths",
        auth: Auth::Bearer(ANY),
        query: &["propertyId"],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/vendor-adapters/{id}/health-check",
        op: "adapterHealthCheck",
        summary: "Probe the vendor's API now",
        auth: Auth::Bearer(ANY),
        query: &[],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/vendor-adapters/{id}/configure",
        op: "configureAdapter",
        summary: "Store a new API key (or client secret, password) where the adapter reads it (spec 001 configure)",
        auth: Auth::Bearer(&["admin"]),
        query: &[],
        body: Some(&["secret", "value"]),
        responses: &[200, 400, 401, 403, 404, 413, 422, 503],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/vendor-adapters/{id}/status",
        op: "adapterStatus",
        summary: "Whether the adapter is configured and enabled, its secret fingerprint (spec 001 status)",
        auth: Auth::Bearer(&["admin"]),
        query: &[],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/vendor-adapters/{id}/log",
        op: "adapterLog",
        summary: "The grants and revocations at the adapter's vendor, a page at a time (spec 001 logs)",
        auth: Auth::Bearer(&["admin"]),
        query: &["limit", "cursor"],
        body: None,
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/offline-issuance/certificates",
        op: "issueOfflineCert",
        summary: "Sign an Ed25519 offline-issuance certificate for a desktop's key (O-1, O-3)",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: Some(&[
            "propertyId",
            "desktopDeviceId",
            "publicKeyEd25519",
            "allowedKinds",
            "maxValidWindowHours",
        ]),
        responses: &[201, 400, 401, 403, 404, 413, 422, 503],
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/offline-issuance/certificates/{id}/revoke",
        op: "revokeOfflineCert",
        summary: "Revoke an offline-issuance certificate",
        auth: Auth::Bearer(&["admin", "service"]),
        query: &[],
        body: Some(&["reason"]),
        responses: READ_ERRORS,
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/webhooks/v1/{vendor}/{token}",
        op: "vendorWebhook",
        summary: "Vendor webhook intake, {vendor} one of ttlock, salto, assa-abloy, kisi, brivo and {token} the adapter's path from GET /api/v1/vendor-adapters: TTLock's callbacks name the lock and its records are read back from the vendor; Salto, Vostio (assa-abloy), Kisi and Brivo deliveries are verified by the adapter's webhook_secret (401 WEBHOOK_SIGNATURE_INVALID otherwise, nothing recorded) and deduplicated; door attempts are recorded from either",
        auth: Auth::WebhookToken,
        query: &[],
        body: None,
        responses: &[200, 401, 404, 413, 422, 502, 503],
        embedded_only: false,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/intake",
        op: "intake",
        summary: "Post a consumed event, for publishers without RabbitMQ: the envelope of docs/events/envelope.schema.json, its data as docs/events/<subject>.schema.json. Embedded: stored at once (outcome accepted or duplicate). Production: validated like the broker's intake, then published to its property's partition with a broker confirm (outcome queued; deduplicated there with the broker's copies)",
        auth: Auth::Bearer(&["service"]),
        query: &[],
        body: None,
        responses: &[202, 400, 401, 403, 413, 422, 503],
        embedded_only: false,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/events",
        op: "recentEvents",
        summary: "Recently produced events of the tenant (embedded mode's bus)",
        auth: Auth::Bearer(&["service"]),
        query: &["limit"],
        body: None,
        responses: READ_ERRORS,
        embedded_only: true,
    },
];

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": { "type": "string", "pattern": "^MELMASTOON\\." },
            "message": { "type": "string" },
            "details": { "type": "object" },
        },
    })
}

/// The consumed events' envelope, as the intake's body (the checked-in schema without its
/// own `$schema` and `$id`, which a component does not carry).
fn envelope_schema() -> Value {
    let mut schema: Value =
        serde_json::from_str(include_str!("../../docs/events/envelope.schema.json"))
            .expect("the checked-in envelope schema is JSON");
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("$id");
    }
    schema
}

fn status_text(op: &str, status: u16) -> &'static str {
    match (op, status) {
        (_, 200) => "OK",
        (_, 201) => "Created",
        // the intake answers once the event is stored: there is nothing to poll
        ("intake", 202) => "Accepted: stored for its saga (outcome accepted, or duplicate for an id seen before)",
        (_, 202) => "Accepted: the step has not run yet; poll the Location",
        ("intake", 400) => "Not JSON, or a key given twice (VALIDATION_FAILED, details.reason malformed or duplicate_key)",
        ("intake", 422) => "Refused (VALIDATION_FAILED, details.reason as the dead-letter reasons: malformed envelope, invalid_payload, unknown_subject, unknown_property, unserved_room, window_ended)",
        (_, status) => status_text_of(status),
    }
}

fn status_text_of(status: u16) -> &'static str {
    match status {
        400 => "Malformed request, or a key given twice (VALIDATION_FAILED)",
        401 => "No valid token (UNAUTHENTICATED)",
        403 => "The token's roles do not allow this (FORBIDDEN)",
        408 => "The request's head or body did not arrive within [http] read_timeout_ms (REQUEST_TIMEOUT); the connection is closed",
        404 => "Not found, or another tenant's (NOT_FOUND)",
        409 => "The vendor does not know the device (DEVICE_NOT_PAIRED)",
        413 => "Body too large (PAYLOAD_TOO_LARGE)",
        422 => "A rule refused it (VALIDATION_FAILED, invalid_state_transition, ...)",
        502 => "The vendor cannot be reached (VENDOR_UNREACHABLE)",
        503 => "Storage or bus unavailable (UNAVAILABLE)",
        _ => "See the code",
    }
}

/// The OpenAPI 3.1 document of [`ENDPOINTS`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let mut params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        params.extend(e.query.iter().map(
            |q| json!({ "name": q, "in": "query", "required": false, "schema": { "type": "string" } }),
        ));
        let mut responses = Map::new();
        for s in e.responses {
            let mut r = json!({ "description": status_text(e.op, *s) });
            if *s >= 400 {
                r["content"] = json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } });
            }
            // only what is sent is promised: the intake's 202 carries no Location
            if *s == 202 && e.op != "intake" {
                r["headers"] = json!({ "Location": {
                    "description": "Where the outcome can be read once the step has run",
                    "schema": { "type": "string" },
                } });
            }
            responses.insert(s.to_string(), r);
        }
        let mut op = json!({
            "operationId": e.op,
            "summary": e.summary,
            "parameters": params,
            "responses": responses,
        });
        match e.auth {
            Auth::None => op["security"] = json!([]),
            Auth::Bearer(roles) => {
                op["security"] = json!([{ "bearer": [] }]);
                op["x-roles"] = json!(roles);
            }
            Auth::WebhookToken => op["security"] = json!([]),
        }
        if let Some(fields) = e.body {
            let props: Map<String, Value> = fields
                .iter()
                .map(|f| {
                    let schema = if f.ends_with("Ids") || *f == "allowedKinds" {
                        json!({ "type": "array", "items": { "type": "string" } })
                    } else if *f == "revision" || *f == "maxValidWindowHours" {
                        json!({ "type": "integer", "minimum": 1 })
                    } else if *f == "scope" {
                        json!({ "type": "object" })
                    } else if *f == "publicKeyEd25519" {
                        json!({
                            "type": "string",
                            "contentEncoding": "base64",
                            "minLength": 44,
                            "maxLength": 44,
                            "description": "The desktop's 32-byte Ed25519 public key (RFC 8032), standard base64 (RFC 4648 §4, with '=' padding): 44 characters",
                        })
                    } else {
                        json!({ "type": "string" })
                    };
                    ((*f).to_owned(), schema)
                })
                .collect();
            op["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false, "properties": props,
                } } },
            });
        }
        if e.op == "intake" {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Envelope" } } },
            });
        }
        if e.embedded_only {
            op["x-embedded-only"] = json!(true);
        }
        let item = paths.entry(e.path.to_owned()).or_insert_with(|| json!({}));
        item[e.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Lockstep",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Door credentials for hospitality: the REST API of spec 002. Errors are {code, message, details}.",
        },
        "paths": paths,
        "components": {
            "schemas": { "Error": error_schema(), "Envelope": envelope_schema() },
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            },
        },
    })
}
