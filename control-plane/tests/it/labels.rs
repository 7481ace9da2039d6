//! Appliance labels: a tenant labels its own appliances, operators add `fleet/` labels the
//! tenant cannot touch, bad labels are refused naming the field, the fleet view filters by
//! labels and plan, the inventory groups by them, and every change is audited.

use serde_json::json;
use sqlx::PgPool;

use crate::support::*;

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn tenants_and_operators_label_appliances_and_the_fleet_is_selected_by_labels(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "labels").await;
    let (hall, _) = appliance(&pool, t, "hall").await;
    let (attic, _) = appliance(&pool, t, "attic").await;
    let admin = operator(&pool, "admin").await;
    let viewer = operator(&pool, "viewer").await;

    // The tenant labels its appliance.
    let path = format!("/api/v1/appliances/{hall}/labels");
    let (status, body) = cp.call("PUT", &path, &key, Some(json!({"labels": {"room": "hall", "floor": "0"}}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["labels"], json!({"floor": "0", "room": "hall"}));

    // An operator puts it in a ring; viewers may not.
    let admin_path = format!("/api/v1/admin/appliances/{hall}/labels");
    let ring = json!({"labels": {"room": "hall", "floor": "0", "fleet/ring": "canary"}});
    let (status, body) = cp.call("PUT", &admin_path, &viewer, Some(ring.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden_for_role")), "{body}");
    let (status, body) = cp.call("PUT", &admin_path, &admin, Some(ring)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cp
        .call(
            "PUT",
            &format!("/api/v1/admin/appliances/{attic}/labels"),
            &admin,
            Some(json!({"labels": {"fleet/ring": "late"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The tenant replaces its own labels; the operator's stay, and it cannot set one.
    let (status, body) = cp.call("PUT", &path, &key, Some(json!({"labels": {"room": "hallway"}}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["labels"], json!({"fleet/ring": "canary", "room": "hallway"}));
    let (status, body) = cp.call("PUT", &path, &key, Some(json!({"labels": {"fleet/ring": "stable"}}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_body")), "{body}");
    assert_eq!(body["error"]["details"]["param"], "labels");
    assert!(body["error"]["message"].as_str().unwrap().contains("fleet/"), "{body}");

    // Bad keys, values and too many labels change nothing.
    let too_many: serde_json::Map<String, serde_json::Value> = (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    for bad in [json!({"Room": "x"}), json!({"room": "two words"}), json!({"a/b/c": "x"}), json!(too_many)] {
        let (status, body) = cp.call("PUT", &path, &key, Some(json!({"labels": bad}))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_body")), "{bad}: {body}");
    }
    let (status, body) = cp.call("PUT", &path, &key, Some(json!({"labels": {"room": 3}}))).await;
    assert_eq!(status, 400, "a value that is not a string: {body}");
    let (_, detail) = cp.get(&format!("/api/v1/appliances/{hall}"), &key).await;
    assert_eq!(detail["labels"], json!({"fleet/ring": "canary", "room": "hallway"}));

    // The fleet view selects by labels (all must match).
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["appliances"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
    };
    let (status, body) = cp.get("/api/v1/admin/appliances?labels=fleet/ring=canary", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), vec![hall.to_string()]);
    let (_, body) = cp.get("/api/v1/admin/appliances?labels=fleet/ring=canary,room=attic", &admin).await;
    assert!(ids(&body).is_empty(), "{body}");
    let (_, body) = cp.get("/api/v1/admin/appliances?labels=fleet/ring=late", &admin).await;
    assert_eq!(ids(&body), vec![attic.to_string()]);
    let (status, body) = cp.get("/api/v1/admin/appliances?labels=ring", &admin).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_body")), "{body}");

    // …and by plan: the appliances of tenants on it.
    let (other, _) = tenant(&pool, "other").await;
    let (elsewhere, _) = appliance(&pool, other, "elsewhere").await;
    let family = json!({"name": "family", "api_per_minute": 120, "api_burst": 20, "assistant_per_hour": 30,
                        "assistant_burst": 3, "mqtt_per_minute": 60, "mqtt_burst": 10});
    let (status, plan) = cp.call("POST", "/api/v1/admin/plans", &admin, Some(family)).await;
    assert_eq!(status, 201, "{plan}");
    let plan_id = plan["id"].as_str().expect("plan id");
    let (status, body) =
        cp.call("PATCH", &format!("/api/v1/admin/tenants/{t}"), &admin, Some(json!({"plan_id": plan_id}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = cp.get(&format!("/api/v1/admin/appliances?plan={plan_id}"), &admin).await;
    let mut on_plan = ids(&body);
    on_plan.sort();
    let mut expected = vec![hall.to_string(), attic.to_string()];
    expected.sort();
    assert_eq!(on_plan, expected, "not {elsewhere}");
    let (_, body) = cp.get(&format!("/api/v1/admin/appliances?plan={plan_id}&labels=fleet/ring=late"), &admin).await;
    assert_eq!(ids(&body), vec![attic.to_string()]);

    // The inventory has a group per label.
    let (_, inventory) = cp.get("/api/v1/inventory", &key).await;
    assert_eq!(inventory["label_room_hallway"]["hosts"], json!(["hall"]), "{inventory}");
    assert_eq!(inventory["label_fleet_ring_canary"]["hosts"], json!(["hall"]));
    assert_eq!(inventory["label_fleet_ring_late"]["hosts"], json!(["attic"]));

    // Every change is in the audit trail, with before and after; refusals are not.
    let changes: Vec<(String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT actor_kind, after FROM audit_log WHERE action = 'appliance.labels' AND target_id = $1 ORDER BY id",
    )
    .bind(hall.to_string())
    .fetch_all(&pool)
    .await
    .expect("audit");
    let kinds: Vec<&str> = changes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["tenant_key", "operator", "tenant_key"], "{changes:?}");
    assert_eq!(changes[2].1, Some(json!({"fleet/ring": "canary", "room": "hallway"})));
}
