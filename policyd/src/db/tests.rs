//! The store's behaviour, run against SQLite and against a real PostgreSQL: a throwaway
//! cluster made with the Debian `initdb`/`pg_ctl` as user `postgres` on a free port. Under
//! `CI=true` a missing PostgreSQL fails the test; elsewhere it is skipped with the reason.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use super::*;
use proto::policy::{ManagedVpn, VpnKey};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn issue_ok(fingerprint: &str) -> impl FnOnce(&str) -> Result<((), String), String> + '_ {
    move |_group| Ok(((), fingerprint.to_string()))
}

/// Everything the server relies on, against one database.
async fn exercise(db: &Db) {
    let now = 1_000_000;
    // Tokens: single use, expiry, unknown.
    db.add_token("t1", "laptops", now + 60).await.unwrap();
    db.add_token("t-old", "laptops", now - 1).await.unwrap();
    let (_, group) = db
        .enrol("t1", "card-a", now, issue_ok("fp-a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(group, "laptops");
    assert!(matches!(
        db.enrol("t1", "card-b", now, issue_ok("fp-b")).await,
        Err(DbError::TokenUsed)
    ));
    assert!(matches!(
        db.enrol("t-old", "card-b", now, issue_ok("fp-b")).await,
        Err(DbError::TokenExpired)
    ));
    assert!(matches!(
        db.enrol("nope", "card-b", now, issue_ok("fp-b")).await,
        Err(DbError::UnknownToken)
    ));
    assert!(db.card_by_fingerprint("fp-b").await.unwrap().is_none());

    // A failed issue spends nothing.
    db.add_token("t2", "servers", now + 60).await.unwrap();
    let failed = db
        .enrol("t2", "card-c", now, |_| Err::<((), String), _>("bad csr"))
        .await
        .unwrap();
    assert_eq!(failed.unwrap_err(), "bad csr");
    db.enrol("t2", "card-c", now, issue_ok("fp-c"))
        .await
        .unwrap()
        .unwrap();

    // Racing enrolments on one token: exactly one wins.
    db.add_token("t3", "laptops", now + 60).await.unwrap();
    let racers = (0..6).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            db.enrol(
                "t3",
                &format!("racer-{i}"),
                now,
                issue_ok(&format!("fp-r{i}")),
            )
            .await
            .map(|r| r.unwrap())
        })
    });
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(DbError::TokenUsed) => {}
            // SQLite may also say "busy" to a loser; it must never let two win.
            Err(DbError::Sql(_)) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won, 1, "one token, one card");

    // Cards: lookup, report, revoke.
    let card = db.card_by_fingerprint("fp-a").await.unwrap().unwrap();
    assert_eq!((card.id.as_str(), card.running_version), ("card-a", 0));
    db.record(&[
        CardUpdate::Seen {
            card_id: "card-a".into(),
            at: now + 1,
        },
        CardUpdate::Report {
            card_id: "card-a".into(),
            at: now + 5,
            running_version: 3,
            outcome: "refused".into(),
            error: Some("expired".into()),
        },
        CardUpdate::Seen {
            card_id: "card-c".into(),
            at: now + 2,
        },
    ])
    .await
    .unwrap();
    let card_c = db.card_by_fingerprint("fp-c").await.unwrap().unwrap();
    assert_eq!(card_c.last_seen, Some(now + 2));
    let card = db.card_by_fingerprint("fp-a").await.unwrap().unwrap();
    assert_eq!(card.running_version, 3);
    assert_eq!(card.last_seen, Some(now + 5));
    assert_eq!(card.last_outcome.as_deref(), Some("refused"));
    assert_eq!(card.last_error.as_deref(), Some("expired"));
    db.revoke("card-a", now + 9).await.unwrap();
    db.revoke("card-a", now + 20).await.unwrap();
    let card = db.card_by_fingerprint("fp-a").await.unwrap().unwrap();
    assert_eq!(
        card.revoked_at,
        Some(now + 9),
        "the first revocation stands"
    );
    assert!(matches!(
        db.revoke("ghost", now).await,
        Err(DbError::NoSuchCard(_))
    ));
    let ids: Vec<_> = db
        .cards()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&"card-c".to_string()));

    // Bundles: versions per group, a taken version refused.
    assert_eq!(db.latest_version("laptops").await.unwrap(), 0);
    let bundle = |group: &str, version| StoredBundle {
        group: group.into(),
        version,
        body: format!("bundle {group} {version}"),
        published_at: now,
        expires_at: now + 100,
    };
    db.insert_bundle(&bundle("laptops", 1)).await.unwrap();
    db.insert_bundle(&bundle("laptops", 2)).await.unwrap();
    db.insert_bundle(&bundle("servers", 1)).await.unwrap();
    assert!(matches!(
        db.insert_bundle(&bundle("laptops", 2)).await,
        Err(DbError::VersionTaken { version: 2, .. })
    ));
    assert_eq!(db.latest_version("laptops").await.unwrap(), 2);
    let mut latest = db.latest_versions().await.unwrap();
    latest.sort();
    assert_eq!(
        latest,
        vec![("laptops".to_string(), 2), ("servers".to_string(), 1)]
    );
    assert_eq!(
        db.bundle("laptops", 2).await.unwrap(),
        Some(bundle("laptops", 2))
    );
    assert_eq!(db.bundle("laptops", 7).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_its_promises() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("policyd.db").display());
    let db = Db::connect(&url).await.unwrap();
    exercise(&db).await;
    exercise_access_requests(&db).await;
    exercise_vpns(&db).await;
    // Reopening runs the migrations again without harm and keeps the data.
    drop(db);
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(db.latest_version("laptops").await.unwrap(), 2);
}

/// A PostgreSQL cluster in a temporary directory, stopped on drop.
struct Postgres {
    data: PathBuf,
    _dir: tempfile::TempDir,
    url: String,
}

impl Postgres {
    /// `Err(reason)` when this machine cannot run one.
    fn start() -> Result<Postgres, String> {
        if !PathBuf::from(PG_BIN).join("initdb").exists() {
            return Err(format!(
                "{PG_BIN}/initdb is missing (Debian package `postgresql`)"
            ));
        }
        let uid = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or("there is no `postgres` user (Debian package `postgresql`)")?;
        if !nix::unistd::Uid::effective().is_root() {
            return Err("starting a PostgreSQL cluster as user postgres needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(dir.path(), Some(uid), None).map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let as_postgres = |program: &str, args: &[&str]| -> Result<(), String> {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(PathBuf::from(PG_BIN).join(program))
                .args(args)
                .output()
                .map_err(|e| format!("{program}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let data_text = data.display().to_string();
        as_postgres(
            "initdb",
            &[
                "-D",
                &data_text,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            dir.path().display()
        );
        let log = dir.path().join("log").display().to_string();
        as_postgres(
            "pg_ctl",
            &["-D", &data_text, "-o", &options, "-l", &log, "-w", "start"],
        )?;
        Ok(Postgres {
            data,
            _dir: dir,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(PathBuf::from(PG_BIN).join("pg_ctl"))
            .args([
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_keeps_the_same_promises() {
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(reason) if in_ci() => panic!("CI=true and PostgreSQL cannot run: {reason}"),
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let db = Db::connect(&pg.url).await.unwrap();
    exercise(&db).await;
    exercise_access_requests(&db).await;
    exercise_vpns(&db).await;
    // Two instances on one database see the same fleet.
    let other = Arc::new(Db::connect(&pg.url).await.unwrap());
    assert_eq!(other.latest_version("laptops").await.unwrap(), 2);
    assert!(
        other
            .card_by_fingerprint("fp-a")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
}

/// Access requests: idempotent by the card's id, bounded per card and per server, decided
/// once, approvals in force until they run out.
async fn exercise_access_requests(db: &Db) {
    use proto::policy::{AccessProtocol, AccessRequest, AccessState, Blocked};
    let now = 2_000_000;
    let request = |n: u32| AccessRequest {
        id: format!("{n:032x}"),
        blocked: Blocked {
            protocol: AccessProtocol::Http,
            host: "blocked.test".into(),
            port: 80,
            path: Some(format!("/{n}")),
            rule: "rules.txt:3".into(),
            at: now - 5,
        },
        reason: (n == 1).then(|| "for the report".to_string()),
    };
    assert_eq!(
        db.receive_request("card-x", &request(1), now, 3, 5)
            .await
            .unwrap(),
        Received::New
    );
    assert_eq!(
        db.receive_request("card-x", &request(1), now + 1, 3, 5)
            .await
            .unwrap(),
        Received::Again,
        "a resend changes nothing"
    );
    db.receive_request("card-x", &request(2), now, 3, 5)
        .await
        .unwrap();
    db.receive_request("card-x", &request(3), now, 3, 5)
        .await
        .unwrap();
    assert!(matches!(
        db.receive_request("card-x", &request(4), now, 3, 5).await,
        Err(DbError::CardRequestsFull(3))
    ));
    db.receive_request("card-y", &request(1), now, 3, 5)
        .await
        .unwrap();
    db.receive_request("card-y", &request(2), now, 3, 5)
        .await
        .unwrap();
    assert!(matches!(
        db.receive_request("card-y", &request(3), now, 3, 5).await,
        Err(DbError::ServerRequestsFull(5))
    ));
    let stored = db.card_requests("card-x").await.unwrap();
    assert_eq!(stored.len(), 3);
    let first = stored
        .iter()
        .find(|r| r.request.id == request(1).id)
        .unwrap();
    assert_eq!(first.request, request(1), "reads back as sent");
    assert_eq!(first.state, AccessState::Open);
    assert_eq!(db.open_requests(100).await.unwrap().len(), 5);

    let approve = |until| Decision::Approve {
        rule: "allow http host blocked.test path /1".into(),
        until,
    };
    db.decide("card-x", &request(1).id, &approve(Some(now + 600)), now)
        .await
        .unwrap();
    assert!(
        matches!(
            db.decide("card-x", &request(1).id, &approve(None), now)
                .await,
            Err(DbError::NoSuchOpenRequest { .. })
        ),
        "decided once"
    );
    db.decide("card-x", &request(2).id, &approve(None), now + 1)
        .await
        .unwrap();
    db.decide(
        "card-x",
        &request(3).id,
        &Decision::Decline {
            message: "use the mirror".into(),
        },
        now + 2,
    )
    .await
    .unwrap();
    let states: Vec<AccessState> = db
        .card_requests("card-x")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.request.id == request(3).id)
        .map(|r| r.state)
        .collect();
    assert_eq!(
        states,
        vec![AccessState::Declined {
            message: "use the mirror".into()
        }]
    );
    // A decided request frees its place: the card may ask again.
    db.receive_request("card-x", &request(4), now, 3, 5)
        .await
        .unwrap();

    let in_force = db.approvals("card-x", now + 10).await.unwrap();
    assert_eq!(
        in_force.iter().map(|a| a.until).collect::<Vec<_>>(),
        vec![Some(now + 600), None]
    );
    assert_eq!(db.approvals("card-x", now + 600).await.unwrap().len(), 1);
    assert_eq!(
        db.cards_with_expired_approvals(now + 599).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        db.cards_with_expired_approvals(now + 600).await.unwrap(),
        vec!["card-x".to_string()]
    );
    // An overlay published after the end no longer holds it.
    db.insert_bundle(&StoredBundle {
        group: "card:card-x".into(),
        version: 1,
        body: "b".into(),
        published_at: now + 600,
        expires_at: now + 9999,
    })
    .await
    .unwrap();
    assert_eq!(
        db.cards_with_expired_approvals(now + 700).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Issue 15: VPNs pushed to cards and the keys cards report (uses `card-a` of [`exercise`]).
async fn exercise_vpns(db: &Db) {
    let vpn = |name: &str, endpoint: &str| ManagedVpn {
        name: name.into(),
        peer_public_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
        endpoint: endpoint.parse().unwrap(),
        address: "10.20.255.2".parse().unwrap(),
        networks: vec!["10.20.0.0/16".into()],
        names: Vec::new(),
        resolver: None,
        idle_lock_secs: 1800,
        keepalive_secs: 0,
    };
    assert!(matches!(
        db.set_vpn("nobody", &vpn("corp", "198.51.100.7:51820"))
            .await,
        Err(DbError::NoSuchCard(_))
    ));
    db.set_vpn("card-a", &vpn("corp", "198.51.100.7:51820"))
        .await
        .unwrap();
    db.set_vpn("card-a", &vpn("lab", "198.51.100.8:51820"))
        .await
        .unwrap();
    let key = |name: &str, key: &str| VpnKey {
        name: name.into(),
        public_key: key.into(),
    };
    // A key for a name not pushed to the card is not kept.
    db.record_vpn_keys("card-a", &[key("corp", "K1"), key("other", "K9")], 77)
        .await
        .unwrap();
    // Changing the settings keeps the reported key: the card keeps its key for the name.
    db.set_vpn("card-a", &vpn("corp", "198.51.100.9:51820"))
        .await
        .unwrap();
    let pushed = db.card_vpns("card-a").await.unwrap();
    assert_eq!(
        pushed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["corp", "lab"]
    );
    assert_eq!(pushed[0].endpoint.to_string(), "198.51.100.9:51820");
    let all = db.all_vpns().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].card_public_key.as_deref(), all[0].key_reported_at),
        (Some("K1"), Some(77))
    );
    assert_eq!(all[1].card_public_key, None);
    db.remove_vpn("card-a", "lab").await.unwrap();
    assert!(matches!(
        db.remove_vpn("card-a", "lab").await,
        Err(DbError::NoSuchVpn { .. })
    ));
    assert_eq!(db.card_vpns("card-a").await.unwrap().len(), 1);
    assert!(db.card_vpns("card-c").await.unwrap().is_empty());
}
