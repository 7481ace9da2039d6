//! Input the API refuses before it reaches a handler or the database (issue 12, findings 4,
//! 6 and 7): text PostgreSQL cannot store (U+0000) is `422 invalid_text`, never a 500;
//! bodies over 2 MiB are `413`, bodies not sent as JSON `415`; configuration and catalog
//! tasks refuse control characters, loopback or unspecified DNS forwarders and reserved mail
//! aliases forwarded outside the household. Against a real PostgreSQL and Mosquitto.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

async fn start(pool: &PgPool) -> (ControlPlane, Pki, Broker) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    (cp, pki, broker)
}

/// A request with a raw body and content type; status and JSON body.
async fn raw(
    cp: &ControlPlane,
    method: &str,
    path: &str,
    credential: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = cp.http.request(method, format!("{}{path}", cp.url)).body(body);
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.expect("body");
    assert_eq!(content_type.as_deref(), Some("application/json"), "{status} {text:.200}: a JSON error");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text:.200}")))
}

fn assert_error(what: &str, (status, body): &(u16, Value), expected: u16, code: &str) {
    assert_eq!(*status, expected, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message: {body}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_nul_character_is_422_invalid_text_never_500(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let (tenant_id, key) = tenant(&pool, "nul").await;
    user(&pool, tenant_id, "owner@nul.example", "owner").await;
    let session = sign_in(&cp, "owner@nul.example").await;
    let admin = operator(&pool, "admin").await;
    let (status, c) = cp.call("POST", "/api/v1/support/conversations", &key, Some(json!({}))).await;
    assert_eq!(status, 201, "{c}");
    let conversation = c["id"].as_str().expect("conversation id").to_owned();
    let tenants_before: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&pool).await.unwrap();
    let keys_before: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&pool).await.unwrap();

    let nul = "a\u{0}b";
    // (what, method, path, credential, body, the param the error names)
    let cases: Vec<(&str, &str, String, &str, Value, &str)> = vec![
        (
            "sign-in (unauthenticated)",
            "POST",
            "/api/v1/auth/login".into(),
            "",
            json!({"email": "a\u{0}@x.example", "password": "xxxxxxxxxxxx"}),
            "email",
        ),
        (
            "support message",
            "POST",
            format!("/api/v1/support/conversations/{conversation}/messages"),
            key.as_str(),
            json!({"text": format!("please add {nul}")}),
            "text",
        ),
        ("new API key", "POST", "/api/v1/keys".into(), session.as_str(), json!({"name": nul}), "name"),
        ("admin: new tenant", "POST", "/api/v1/admin/tenants".into(), admin.as_str(), json!({"name": nul}), "name"),
        (
            "admin: tenant update",
            "PATCH",
            format!("/api/v1/admin/tenants/{tenant_id}"),
            admin.as_str(),
            json!({"name": nul}),
            "name",
        ),
        (
            "admin: new operator",
            "POST",
            "/api/v1/admin/operators".into(),
            admin.as_str(),
            json!({"name": nul, "role": "viewer"}),
            "name",
        ),
        // Deep inside a task's parameters, and in a key rather than a value.
        (
            "nested value",
            "POST",
            "/api/v1/admin/tenants".into(),
            admin.as_str(),
            json!({"name": "ok", "extra": [{"deep": ["x", nul]}]}),
            "extra[0].deep[1]",
        ),
        ("a key", "POST", "/api/v1/admin/tenants".into(), admin.as_str(), json!({"na\u{0}me": "x"}), "na\\u0000me"),
    ];
    for (what, method, path, credential, body, param) in cases {
        let bytes = serde_json::to_vec(&body).unwrap();
        assert!(bytes.windows(6).any(|w| w == b"\\u0000"), "{what}: the body carries an escaped NUL");
        let credential = (!credential.is_empty()).then_some(credential);
        let answer = raw(&cp, method, &path, credential, Some("application/json"), bytes).await;
        assert_error(what, &answer, 422, "invalid_text");
        assert_eq!(answer.1["error"]["details"]["param"], param, "{what}: {}", answer.1);
    }

    // In a query string: `%00` is U+0000 once decoded.
    for (what, path, credential) in [
        ("audit request id", "/api/v1/admin/audit?request_id=%00", admin.as_str()),
        ("audit, another spelling", "/api/v1/admin/audit?limit=5&request_id=x%00y", admin.as_str()),
        ("tenant search", "/api/v1/admin/tenants?q=%00", admin.as_str()),
        ("fleet filter", "/api/v1/admin/appliances?agent_version=%00", admin.as_str()),
        ("appliances", "/api/v1/appliances?after=%00", key.as_str()),
    ] {
        let (status, body) = cp.get(path, credential).await;
        assert_error(what, &(status, body.clone()), 422, "invalid_text");
        assert!(body["error"]["details"]["param"].is_string(), "{what}: {body}");
    }
    // `%2500` is a literal "%00", which PostgreSQL stores fine.
    let (status, body) = cp.get("/api/v1/admin/audit?request_id=%2500", &admin).await;
    assert_eq!(status, 200, "{body}");

    // Nothing was stored, and the right request still works.
    let tenants_after: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&pool).await.unwrap();
    let keys_after: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&pool).await.unwrap();
    assert_eq!((tenants_after, keys_after), (tenants_before, keys_before));
    let (status, body) = cp.call("POST", "/api/v1/keys", &session, Some(json!({"name": "ab"}))).await;
    assert_eq!(status, 201, "{body}");
    // The failed requests are client errors in the metrics, not server errors.
    let metrics = cp.metrics().await;
    assert!(
        !metrics.lines().any(|l| l.starts_with("hearth_http_requests_total") && l.contains("status=\"500\"")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("hearth_http_requests_total") && l.contains("status=\"422\"")),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn large_bodies_are_413_and_bodies_not_sent_as_json_415(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let (tenant_id, _) = tenant(&pool, "big").await;
    user(&pool, tenant_id, "owner@big.example", "owner").await;
    let session = sign_in(&cp, "owner@big.example").await;
    let admin = operator(&pool, "admin").await;

    // 10 MB of valid JSON: refused for its size, unauthenticated or not.
    let big = serde_json::to_vec(&json!({"email": "x@big.example", "password": "y".repeat(10_000_000)})).unwrap();
    let answer = raw(&cp, "POST", "/api/v1/auth/login", None, Some("application/json"), big.clone()).await;
    assert_error("10 MB sign-in", &answer, 413, "payload_too_large");
    let answer = raw(&cp, "POST", "/api/v1/admin/tenants", Some(&admin), Some("application/json"), big).await;
    assert_error("10 MB tenant", &answer, 413, "payload_too_large");
    // Just over 2 MiB too; just under is read (and refused for what it says).
    let over = serde_json::to_vec(&json!({"name": "n".repeat(2 * 1024 * 1024)})).unwrap();
    let answer = raw(&cp, "POST", "/api/v1/keys", Some(&session), Some("application/json"), over).await;
    assert_error("2 MiB key name", &answer, 413, "payload_too_large");
    let under = serde_json::to_vec(&json!({"name": "n".repeat(2 * 1024 * 1024 - 100)})).unwrap();
    let answer = raw(&cp, "POST", "/api/v1/keys", Some(&session), Some("application/json"), under).await;
    assert_error("almost 2 MiB key name", &answer, 422, "invalid_body");

    // The right JSON with the wrong content type, or none.
    let body = serde_json::to_vec(&json!({"email": "owner@big.example", "password": PASSWORD})).unwrap();
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx"), None]
    {
        let answer = raw(&cp, "POST", "/api/v1/auth/login", None, content_type, body.clone()).await;
        assert_error(&format!("sign-in as {content_type:?}"), &answer, 415, "unsupported_media_type");
        let answer =
            raw(&cp, "POST", "/api/v1/admin/tenants", Some(&admin), content_type, b"{\"name\":\"x\"}".to_vec()).await;
        assert_error(&format!("tenant as {content_type:?}"), &answer, 415, "unsupported_media_type");
    }
    // With parameters, or as a `+json` type, it is JSON.
    for content_type in ["application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"] {
        let answer = raw(&cp, "POST", "/api/v1/auth/login", None, Some(content_type), body.clone()).await;
        assert_eq!(answer.0, 200, "{content_type}: {}", answer.1);
    }
    // Malformed JSON is still 400 invalid_body.
    let answer = raw(&cp, "POST", "/api/v1/auth/login", None, Some("application/json"), b"{\"email\":".to_vec()).await;
    assert_error("malformed", &answer, 400, "invalid_body");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn configuration_refuses_control_characters_and_unusable_forwarders(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let (tenant_id, key) = tenant(&pool, "cfg").await;
    let (id, _) = appliance(&pool, tenant_id, "box").await;
    let path = format!("/api/v1/appliances/{id}/config");

    let relay = |host: &str| json!({"document": {"mail": {"relay": {"host": host, "port": 587}}}});
    for (what, target, body, at, rule) in [
        (
            "relay host with a newline",
            path.as_str(),
            relay("smtp.example.com\nrelayhost = [evil.example]"),
            "mail.relay.host",
            "control_character",
        ),
        (
            "relay host with a carriage return",
            path.as_str(),
            relay("smtp.example.com\r"),
            "mail.relay.host",
            "control_character",
        ),
        (
            "relay host in the defaults",
            "/api/v1/config/defaults",
            relay("a\nb"),
            "mail.relay.host",
            "control_character",
        ),
        (
            "relay user name",
            path.as_str(),
            json!({"document": {"mail": {"relay": {"host": "smtp.example.com", "username": "me\nx"}}}}),
            "mail.relay.username",
            "control_character",
        ),
        (
            "loopback forwarder",
            path.as_str(),
            json!({"document": {"dns": {"forwarders": ["127.0.0.1"]}}}),
            "dns.forwarders.servers[0]",
            "unusable_ip",
        ),
        (
            "unspecified forwarder",
            path.as_str(),
            json!({"document": {"dns": {"forwarders": ["9.9.9.9", "0.0.0.0"]}}}),
            "dns.forwarders.servers[1]",
            "unusable_ip",
        ),
        (
            "IPv6 loopback forwarder",
            "/api/v1/config/defaults",
            json!({"document": {"dns": {"forwarders": ["::1"]}}}),
            "dns.forwarders.servers[0]",
            "unusable_ip",
        ),
        (
            "root forwarded outside",
            path.as_str(),
            json!({"document": {"mail": {"aliases": [{"alias": "root", "destination": "attacker@evil.example"}]}}}),
            "mail.aliases[0].destination",
            "reserved_alias",
        ),
    ] {
        let (status, body) = cp.call("PUT", target, &key, Some(body)).await;
        assert_error(what, &(status, body.clone()), 422, "invalid_config");
        assert_eq!(body["error"]["details"], json!({"path": at, "rule": rule}), "{what}: {body}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM appliance_config").fetch_one(&pool).await.unwrap();
    let defaults: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_config").fetch_one(&pool).await.unwrap();
    assert_eq!((stored, defaults), (0, 0), "nothing refused was stored");

    // What a household legitimately writes is accepted.
    let ok = json!({"document": {
        "dns": {"forwarders": ["192.168.1.1", "9.9.9.9"], "records": [{"hostname": "vps.home", "ip": "203.0.113.7"}]},
        "mail": {"relay": {"host": "smtp.example.com", "port": 587},
                 "aliases": [{"alias": "root", "destination": "alice"}, {"alias": "family", "destination": "bob@example.com"}]}}});
    let (status, body) = cp.call("PUT", &path, &key, Some(ok)).await;
    assert_eq!(status, 200, "{body}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn tasks_refuse_unusable_addresses_control_characters_and_reserved_aliases(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let (tenant_id, key) = tenant(&pool, "tasks").await;
    let (id, _) = appliance(&pool, tenant_id, "box").await;
    let admin = operator(&pool, "admin").await;
    let path = format!("/api/v1/appliances/{id}/tasks");

    let refused = [
        ("dns.forwarders.set", json!({"servers": ["127.0.0.1"]}), "servers[0]", "unusable_ip"),
        ("dns.forwarders.set", json!({"servers": ["9.9.9.9", "0.0.0.0"]}), "servers[1]", "unusable_ip"),
        ("dns.forwarders.set", json!({"servers": ["::1"]}), "servers[0]", "unusable_ip"),
        ("dns.record.add", json!({"hostname": "nas.home", "ip": "127.0.0.1"}), "ip", "unusable_ip"),
        (
            "dns.record.add",
            json!({"hostname": "nas.home\nserver=1.2.3.4", "ip": "10.0.0.1"}),
            "hostname",
            "control_character",
        ),
        (
            "users.add",
            json!({"username": "eve", "full_name": "Eve\nroot::0:0::/:/bin/sh"}),
            "full_name",
            "control_character",
        ),
        (
            "mail.alias.add",
            json!({"alias": "root", "destination": "attacker@evil.example"}),
            "destination",
            "reserved_alias",
        ),
        (
            "mail.alias.add",
            json!({"alias": "postmaster", "destination": "x@evil.example"}),
            "destination",
            "reserved_alias",
        ),
        (
            "mail.alias.add",
            json!({"alias": "abuse", "destination": "x@home.evil.example"}),
            "destination",
            "reserved_alias",
        ),
    ];
    for (action, params, param, rule) in refused {
        let body = json!({"action": action, "params": params});
        for (who, credential, target) in [
            ("customer", key.as_str(), path.clone()),
            ("operator", admin.as_str(), format!("/api/v1/admin/appliances/{id}/tasks")),
        ] {
            let (status, answer) = cp.call("POST", &target, credential, Some(body.clone())).await;
            assert_error(&format!("{who} {body}"), &(status, answer.clone()), 422, "invalid_params");
            assert_eq!(answer["error"]["details"], json!({"param": param, "rule": rule}), "{who} {body}: {answer}");
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 0, "nothing refused was stored");

    // Inside the household, or a public address a household may name: accepted.
    for (action, params) in [
        ("dns.forwarders.set", json!({"servers": ["192.168.1.1", "2620:fe::fe"]})),
        ("dns.record.add", json!({"hostname": "vps.home", "ip": "203.0.113.7"})),
        ("mail.alias.add", json!({"alias": "root", "destination": "alice"})),
        ("mail.alias.add", json!({"alias": "postmaster", "destination": "alice@nas.home"})),
        ("mail.alias.add", json!({"alias": "family", "destination": "bob@example.com"})),
    ] {
        let (status, answer) = cp.call("POST", &path, &key, Some(json!({"action": action, "params": params}))).await;
        assert_eq!(status, 202, "{action} {params}: {answer}");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_document_describes_the_refusals_and_the_events_sent(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let r = cp.http.get(format!("{}/api/openapi.json", cp.url)).send().await.expect("document");
    let doc: Value = r.json().await.expect("json");
    let resolve = |v: &Value| -> Value {
        match v["$ref"].as_str() {
            Some(r) => doc.pointer(r.strip_prefix('#').unwrap()).cloned().expect("resolves"),
            None => v.clone(),
        }
    };
    let description = |path: &str, method: &str, status: &str| -> String {
        let response = resolve(&doc["paths"][path][method]["responses"][status]);
        response["description"].as_str().unwrap_or_else(|| panic!("{method} {path} {status} documented")).to_owned()
    };
    for (path, method) in [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/keys", "post"),
        ("/api/v1/admin/tenants", "post"),
        ("/api/v1/admin/tenants/{id}", "patch"),
        ("/api/v1/appliances/{id}/config", "put"),
    ] {
        assert!(description(path, method, "413").contains("`payload_too_large`"), "{method} {path}");
        assert!(description(path, method, "415").contains("`unsupported_media_type`"), "{method} {path}");
        assert!(description(path, method, "422").contains("`invalid_text`"), "{method} {path}");
    }
    // A 422 of the operation's own keeps its codes.
    assert!(description("/api/v1/appliances/{id}/config", "put", "422").contains("`invalid_config`"));
    // A query string can carry U+0000 too; no body, so no 413/415.
    assert!(description("/api/v1/admin/audit", "get", "422").contains("`invalid_text`"));
    assert!(doc["paths"]["/api/v1/admin/audit"]["get"]["responses"].get("413").is_none());

    // The event stream is described event by event (name, JSON data, id), and each event's
    // data is one of the objects it sends.
    let content = &doc["paths"]["/api/v1/support/conversations/{id}/events"]["get"]["responses"]["200"]["content"];
    let frame = resolve(&content["text/event-stream"]["schema"]);
    let names = resolve(&frame["properties"]["event"])["enum"].clone();
    assert_eq!(names, json!(["message", "proposal", "task", "task_event", "end"]), "{frame}");
    assert_eq!(frame["properties"]["data"]["type"], "string", "{frame}");
    assert_eq!(frame["properties"]["data"]["contentMediaType"], "application/json", "{frame}");
    let schema = &doc["components"]["schemas"]["StreamEvent"];
    let variants = schema["oneOf"].as_array().expect("one of the events");
    assert_eq!(variants.len(), 5, "{schema}");
    for v in variants {
        assert_eq!(resolve(v)["type"], "object", "{v}");
    }
}

/// A request refused before its body was read leaves unread bytes on the connection, which
/// the server then closes: the answer says `Connection: close`, so an HTTP/1.1 client opens
/// a new connection for its next request instead of failing a POST on the closing one
/// (schemathesis met this as "Network Error" on the request after a 401).
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_refused_request_with_a_body_closes_its_connection_and_the_next_one_works(pool: PgPool) {
    let (cp, pki, _broker) = start(&pool).await;
    let (_, key) = tenant(&pool, "household").await;
    let http1 = reqwest::Client::builder()
        .use_preconfigured_tls(hearth_protocol::tls::client_config(&pki.read("ca.crt")).expect("tls"))
        .http1_only()
        .build()
        .expect("client");
    let url = format!("{}/api/v1/admin/plans/{}", cp.url, uuid::Uuid::new_v4());
    for _ in 0..5 {
        let r =
            http1.patch(&url).bearer_auth(&key).json(&json!({"name": "x".repeat(100)})).send().await.expect("patch");
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(r.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
        // The next non-idempotent request, on whatever connection the client picks, works.
        let r = http1
            .post(format!("{}/api/v1/appliances/{}/tasks", cp.url, uuid::Uuid::new_v4()))
            .bearer_auth(&key)
            .json(&json!({"action": "appliance.reboot"}))
            .send()
            .await
            .expect("the next POST gets an answer");
        assert_eq!(r.status().as_u16(), 404);
    }
    // An answer without a body to refuse keeps the connection.
    let r = http1.get(format!("{}/api/v1/appliances", cp.url)).bearer_auth(&key).send().await.expect("get");
    assert!(r.headers().get("connection").is_none());
}
