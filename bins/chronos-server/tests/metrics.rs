#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `GET /metrics` explains itself: `# HELP` for every family, build info,
//! pool and process gauges, internal API counts; `metrics_bind` moves it.
//! Metrics are process-wide and tests share the process, so assertions look
//! for series, never exact totals.

mod support;

use support::{ADMIN_TOKEN, TestApp, spawn_app, spawn_app_with};
use sync_store::test_support::Backend;

async fn get_metrics(app: &TestApp, base: &str) -> String {
    let response = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Some traffic so that the request-driven families exist.
async fn exercise(app: &TestApp) {
    let unknown = [("X-Goog-Channel-ID", "1b2c3d4e-0000-4000-8000-000000000000")];
    assert_eq!(app.notify(&unknown).await.status(), 200);
    let response = app
        .http
        .get(format!(
            "{}/internal/calendars/00000000-0000-4000-8000-000000000000",
            app.address
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .http
        .get(format!("{}/internal/calendars?user_id=nobody", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// The series lines (name and labels) of `family`.
fn series<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chronos_family_has_help_and_a_unit_suffix_for_its_type() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    exercise(&app).await;
    let text = get_metrics(&app, &app.address).await;
    let families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(name, _)| name.starts_with("chronos_"))
        .collect();
    assert!(families.len() >= 8, "too few families: {text}");
    for (name, kind) in families {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > name.len() + 12),
            "no HELP for {name}"
        );
        match kind {
            "counter" => assert!(name.ends_with("_total"), "counter {name} lacks _total"),
            "histogram" | "summary" => {
                assert!(name.ends_with("_seconds"), "{kind} {name} lacks its unit")
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_names_the_version_and_the_commit() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let text = get_metrics(&app, &app.address).await;
    let info = series(&text, "chronos_build_info");
    assert_eq!(info.len(), 1, "{text}");
    let line = info[0];
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains("commit=\""), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_gauges_show_size_available_and_waiting_per_pool() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let text = get_metrics(&app, &app.address).await;
    for family in [
        "chronos_db_pool_connections",
        "chronos_db_pool_max_connections",
        "chronos_db_pool_available_connections",
        "chronos_db_pool_waiting_requests",
    ] {
        let lines = series(&text, family);
        assert!(
            lines.iter().any(|l| l.contains("pool=\"store\"")),
            "{family}: {text}"
        );
    }
    let max = series(&text, "chronos_db_pool_max_connections");
    let max: f64 = max[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(max >= 1.0, "{max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_cpu_memory_and_open_files_are_reported() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let text = get_metrics(&app, &app.address).await;
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        let lines = series(&text, family);
        assert_eq!(lines.len(), 1, "{family}: {text}");
        let value: f64 = lines[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 0.0, "{family} = {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_api_requests_are_counted_by_route_method_and_status() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    exercise(&app).await;
    let text = get_metrics(&app, &app.address).await;
    let lines = series(&text, "chronos_internal_api_requests_total");
    let has = |route: &str, status: &str| {
        lines.iter().any(|l| {
            l.contains(&format!("route=\"{route}\""))
                && l.contains("method=\"GET\"")
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(has("/internal/calendars/{id}", "404"), "{lines:?}");
    assert!(has("/internal/calendars", "401"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("00000000-0000")),
        "raw ids must not become labels: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_bind_serves_metrics_on_its_own_address_instead_of_bind() {
    let app = spawn_app_with(Backend::Sqlite, |raw| {
        raw.metrics_bind = Some("127.0.0.1:0".into());
    })
    .await
    .unwrap();
    let metrics_address = app.metrics_address.clone().expect("a metrics server");
    let text = get_metrics(&app, &metrics_address).await;
    assert!(text.contains("chronos_build_info"), "{text}");
    let on_bind = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(on_bind.status(), 404);
    let healthz = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "the main port still serves");
}
