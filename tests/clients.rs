//! App credentials: with `[[clients]]`, only known apps get through, and the log names them.

mod support;

use base64::Engine;
use bcproxy::clients::token_sha256;
use support::*;

fn clients_toml() -> String {
    format!(
        "[[clients]]\nname = \"erp\"\ntoken_sha256 = \"{}\"\n\n[[clients]]\nname = \"shop\"\ntoken_sha256 = \"{}\"\n",
        token_sha256("erp-token-1"),
        token_sha256("shop-token-2")
    )
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A missing or wrong app credential gets 401 in the store's shape and nothing reaches the
/// store; a right one, in either form, is forwarded with the store's own credential.
#[tokio::test]
async fn only_known_apps_get_through() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), &clients_toml(), &[])).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/1", proxy.url());
    let refused = [
        http.get(&url).await,
        http.get_with(&url, &[("x-auth-token", "guess")]).await,
        http.get_with(&url, &[("authorization", &basic("erp", "shop-token-2"))])
            .await,
        http.get_with(&url, &[("authorization", &basic("nobody", "erp-token-1"))])
            .await,
        http.get_with(&url, &[("authorization", "Bearer erp-token-1")])
            .await,
    ];
    for reply in &refused {
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"bcproxy\"")
        );
        assert_eq!(reply.json()[0]["status"], 401);
    }
    assert_eq!(
        sim.sim.stats(false).calls,
        0,
        "an unauthenticated call reached the store"
    );

    let erp = http
        .get_with(&url, &[("authorization", &basic("erp", "erp-token-1"))])
        .await;
    let shop = http
        .get_with(&url, &[("x-auth-token", "shop-token-2")])
        .await;
    assert_eq!((erp.status, shop.status), (200, 200));
    let stats = sim.sim.stats(true);
    assert_eq!(stats.calls, 2);
    assert_eq!(stats.distinct_credentials, 1);
    assert!(stats.log.iter().all(|c| c.auth == "ok"));

    proxy.stop().await;
    let access = logs.access();
    assert_eq!(access.len(), 7);
    assert!(
        access[..5]
            .iter()
            .all(|l| l["client"].is_null() && l["status"] == 401)
    );
    assert_eq!(access[5]["client"], "erp");
    assert_eq!(access[6]["client"], "shop");
    let text = logs.text();
    for secret in ["erp-token-1", "shop-token-2", "guess"] {
        assert!(!text.contains(secret), "the log holds {secret}");
    }
}
