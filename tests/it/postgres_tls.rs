//! Connections to PostgreSQL honour the URL's `sslmode` (and `sslrootcert`) as libpq does,
//! against the machine's PostgreSQL: Debian's serves TLS with its snakeoil certificate, made
//! for `localhost`, which the tests take as the CA. Runs when `INVENTORY_TEST_POSTGRES_URL` is
//! set (CI sets it), and needs that server's `ssl = on`.

use crate::support;

use std::time::Duration;

use inventory::log::PostgresLog;

/// `url` with its host replaced by `host`.
fn with_host(url: &str, host: &str) -> String {
    let start = url.find("//").map_or(0, |at| at + 2);
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |at| start + at);
    let host_start = url[start..authority_end]
        .rfind('@')
        .map_or(start, |at| start + at + 1);
    let host_end = url[host_start..authority_end]
        .find(':')
        .map_or(authority_end, |at| host_start + at);
    format!("{}{host}{}", &url[..host_start], &url[host_end..])
}

fn with_parameters(url: &str, parameters: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameters}")
}

/// An administrative connection, plain text: it only looks at the others.
async fn admin(url: &str) -> tokio_postgres::Client {
    let url = with_parameters(url, "sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Whether each connection of `application` is encrypted, once it has at least `count`.
async fn encrypted(admin: &tokio_postgres::Client, application: &str, count: usize) -> Vec<bool> {
    let started = std::time::Instant::now();
    loop {
        let rows = admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&application],
            )
            .await
            .unwrap();
        if rows.len() >= count {
            return rows.iter().map(|row| row.get(0)).collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{application}: {} connections, expected {count}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_connection_to_postgresql_honours_sslmode() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let admin = admin(&url).await;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(
        ssl, "on",
        "this test needs the PostgreSQL at {url} to serve TLS (ssl = on, Debian's default)"
    );
    let certificate: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let schema = support::fresh_schema();
    let run = uuid::Uuid::now_v7().simple().to_string();

    // Plain, TLS by choice, TLS by default (prefer): the pool's connection and the one that
    // listens for other servers' appends, both.
    for (mode, tls) in [("disable", false), ("require", true), ("prefer", true)] {
        let application = format!("tls-{mode}-{run}");
        let log_url = with_parameters(
            &url,
            &format!("application_name={application}&sslmode={mode}"),
        );
        let log = PostgresLog::connect(&log_url, &schema)
            .await
            .unwrap_or_else(|error| panic!("sslmode={mode}: {error}"));
        let seen = encrypted(&admin, &application, 2).await;
        assert!(
            seen.iter().all(|ssl| *ssl == tls),
            "sslmode={mode}: {seen:?}"
        );
        drop(log);
    }

    // The certificate checked: by its CA for any host, then also for the host.
    let root = format!("sslrootcert={certificate}");
    let by_ip = with_host(&url, "127.0.0.1");
    let by_name = with_host(&url, "localhost");
    for (name, log_url) in [
        (
            "verify-ca",
            with_parameters(&by_ip, &format!("sslmode=verify-ca&{root}")),
        ),
        (
            "require with a CA",
            with_parameters(&by_ip, &format!("sslmode=require&{root}")),
        ),
        (
            "verify-full",
            with_parameters(&by_name, &format!("sslmode=verify-full&{root}")),
        ),
    ] {
        let application = format!("tls-{}-{run}", name.replace(' ', "-"));
        let log_url = with_parameters(&log_url, &format!("application_name={application}"));
        let log = PostgresLog::connect(&log_url, &schema)
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(
            encrypted(&admin, &application, 1)
                .await
                .iter()
                .all(|ssl| *ssl)
        );
        drop(log);
    }

    // Refused: a certificate for another host than the one connected to, and one of another CA.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.pem");
    let authority = inventory::certificates::CertificateAuthority::new("another CA").unwrap();
    std::fs::write(&other_ca, authority.certificate_pem()).unwrap();
    for (name, log_url) in [
        (
            "verify-full by IP address",
            with_parameters(&by_ip, &format!("sslmode=verify-full&{root}")),
        ),
        (
            "verify-ca of another CA",
            with_parameters(
                &by_ip,
                &format!("sslmode=verify-ca&sslrootcert={}", other_ca.display()),
            ),
        ),
    ] {
        let Err(error) = PostgresLog::connect(&log_url, &schema).await else {
            panic!("{name}: connected")
        };
        assert!(error.to_string().contains("certificate"), "{name}: {error}");
    }
    support::drop_schema(&url, &schema).await;
}

#[test]
fn the_host_of_a_url_is_replaced_and_nothing_else() {
    assert_eq!(
        with_host("postgres://u:p@127.0.0.1:5432/test?x=1", "localhost"),
        "postgres://u:p@localhost:5432/test?x=1"
    );
    assert_eq!(
        with_host("postgres://localhost/test", "127.0.0.1"),
        "postgres://127.0.0.1/test"
    );
}
