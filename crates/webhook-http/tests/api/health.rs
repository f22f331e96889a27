//! `GET /healthz` and `GET /readyz`.

use crate::helpers::Fixture;
use actix_web::http::header;
use actix_web::test::TestRequest;
use serde_json::json;

#[actix_web::test]
async fn healthz_gets_200_ok() {
    let f = Fixture::new();
    f.send(TestRequest::get().uri("/healthz"))
        .await
        .assert(200, &json!({"status": "ok"}));
}

#[actix_web::test]
async fn healthz_gets_200_even_when_the_store_is_down() {
    let f = Fixture::new();
    f.store.set_down(true);
    f.send(TestRequest::get().uri("/healthz"))
        .await
        .assert(200, &json!({"status": "ok"}));
}

#[actix_web::test]
async fn readyz_gets_200_when_the_store_answers() {
    let f = Fixture::new();
    f.send(TestRequest::get().uri("/readyz"))
        .await
        .assert(200, &json!({"status": "ready"}));
}

#[actix_web::test]
async fn readyz_gets_503_when_the_store_is_down() {
    let f = Fixture::new();
    f.store.set_down(true);
    f.send(TestRequest::get().uri("/readyz"))
        .await
        .assert(503, &json!({"status": "unavailable"}));
}

#[actix_web::test]
async fn probes_answer_a_wrong_method_with_json_405() {
    let f = Fixture::new();
    for path in ["/healthz", "/readyz"] {
        let reply = f.send(TestRequest::post().uri(path)).await;
        reply.assert(405, &json!({"detail": "Method not allowed"}));
        assert_eq!(reply.headers.get(header::ALLOW).unwrap(), "GET");
    }
}

#[actix_web::test]
async fn unknown_path_gets_json_404_through_the_default_service() {
    let f = Fixture::new();
    f.send(TestRequest::get().uri("/nope"))
        .await
        .assert(404, &json!({"detail": "Not found"}));
}
