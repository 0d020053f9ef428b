//! Membership over real UDP sockets on 127.0.0.1, gossiping every 50 ms.
//! Every wait polls with a deadline; none asserts how fast anything is.

use super::*;
use std::future::Future;

const SECRET: &str = "the cluster secret";
const DEADLINE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

fn config(name: &str, secret: &str, seeds: &[SocketAddr]) -> MembershipConfig {
    let mut config = MembershipConfig::new(
        NodeId::new(name),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ClusterSecret::from_passphrase(secret),
    );
    config.seeds = seeds.iter().map(ToString::to_string).collect();
    config.gossip_interval = Duration::from_millis(50);
    config
}

async fn start(name: &str, secret: &str, seeds: &[SocketAddr]) -> anyhow::Result<Membership> {
    Ok(Membership::start(config(name, secret, seeds)).await?)
}

/// Polls `check` until it returns `Ok`; past the deadline, fails with the
/// last thing it said was wrong.
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let why = match check().await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: still not the case after {DEADLINE:?}: {why}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ok when `m` lists exactly `expected` (node, value of "rpc") and all live.
async fn sees_live(m: &Membership, expected: &[(&str, &str)]) -> Result<(), String> {
    let peers = m.peers().await;
    let seen: Vec<(&str, Option<&str>, bool)> = peers
        .iter()
        .map(|p| {
            let rpc = p.state.get("rpc").map(String::as_str);
            (p.node.as_str(), rpc, p.live)
        })
        .collect();
    let wanted: Vec<(&str, Option<&str>, bool)> = expected
        .iter()
        .map(|&(node, rpc)| (node, Some(rpc), true))
        .collect();
    if seen == wanted {
        Ok(())
    } else {
        Err(format!("{} sees {seen:?}", m.node()))
    }
}

#[tokio::test]
async fn three_nodes_find_each_other_from_one_seed_and_see_each_others_state() -> anyhow::Result<()>
{
    let a = start("a", SECRET, &[]).await?;
    let b = start("b", SECRET, &[a.gossip_addr()]).await?;
    let c = start("c", SECRET, &[a.gossip_addr()]).await?;
    for m in [&a, &b, &c] {
        m.set("rpc", format!("{}:rpc", m.node())).await;
    }
    eventually("a sees b and c", || {
        sees_live(&a, &[("b", "b:rpc"), ("c", "c:rpc")])
    })
    .await?;
    eventually("b sees a and c", || {
        sees_live(&b, &[("a", "a:rpc"), ("c", "c:rpc")])
    })
    .await?;
    eventually("c sees a and b", || {
        sees_live(&c, &[("a", "a:rpc"), ("b", "b:rpc")])
    })
    .await?;

    // A state change is announced on `changes`.
    let mut changes = a.changes();
    changes.borrow_and_update();
    c.set("ring", "v2").await;
    eventually("a sees c's ring", || async {
        let peers = a.peers().await;
        match peers.iter().find(|p| p.node.as_str() == "c") {
            Some(p) if p.state.get("ring").map(String::as_str) == Some("v2") => Ok(()),
            other => Err(format!("c is {other:?}")),
        }
    })
    .await?;
    tokio::time::timeout(DEADLINE, changes.changed()).await??;

    for m in [a, b, c] {
        m.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_node_with_another_secret_never_joins() -> anyhow::Result<()> {
    let a = start("a", SECRET, &[]).await?;
    let b = start("b", SECRET, &[a.gossip_addr()]).await?;
    let x = start("x", "a guess", &[a.gossip_addr(), b.gossip_addr()]).await?;
    for m in [&a, &b, &x] {
        m.set("rpc", m.node().to_string()).await;
    }
    eventually("a sees b", || sees_live(&a, &[("b", "b")])).await?;
    eventually("b sees a", || sees_live(&b, &[("a", "a")])).await?;
    // x keeps knocking on its seeds; wait until both have turned it away a
    // few times, then check it is still nowhere.
    eventually("a and b reject x's gossip", || async {
        let (ra, rb) = (a.rejected_datagrams(), b.rejected_datagrams());
        if ra >= 3 && rb >= 3 {
            Ok(())
        } else {
            Err(format!("rejected so far: a {ra}, b {rb}"))
        }
    })
    .await?;
    sees_live(&a, &[("b", "b")])
        .await
        .map_err(anyhow::Error::msg)?;
    sees_live(&b, &[("a", "a")])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(x.peers().await, Vec::new());

    for m in [a, b, x] {
        m.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_node_that_shuts_down_is_soon_shown_not_live() -> anyhow::Result<()> {
    let a = start("a", SECRET, &[]).await?;
    let b = start("b", SECRET, &[a.gossip_addr()]).await?;
    let c = start("c", SECRET, &[a.gossip_addr()]).await?;
    for m in [&a, &b, &c] {
        m.set("rpc", m.node().to_string()).await;
    }
    eventually("a sees b and c", || {
        sees_live(&a, &[("b", "b"), ("c", "c")])
    })
    .await?;
    eventually("b sees a and c", || {
        sees_live(&b, &[("a", "a"), ("c", "c")])
    })
    .await?;

    c.shutdown().await;
    for m in [&a, &b] {
        eventually("c is listed, not live", || async {
            let peers = m.peers().await;
            match peers.iter().find(|p| p.node.as_str() == "c") {
                Some(p) if !p.live => Ok(()),
                other => Err(format!("{} sees c as {other:?}", m.node())),
            }
        })
        .await?;
    }
    for m in [a, b] {
        m.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_restarted_node_is_listed_once_live_with_its_new_state() -> anyhow::Result<()> {
    let a = start("a", SECRET, &[]).await?;
    a.set("rpc", "a").await;
    let b = start("b", SECRET, &[a.gossip_addr()]).await?;
    b.set("rpc", "old").await;
    eventually("a sees the first b", || sees_live(&a, &[("b", "old")])).await?;
    let first_generation = a.peers().await[0].generation;

    // Same name, same address, new incarnation.
    let addr = b.gossip_addr();
    b.shutdown().await;
    let mut again = config("b", SECRET, &[a.gossip_addr()]);
    again.listen = addr;
    again.advertise = addr;
    let b = Membership::start(again).await?;
    b.set("rpc", "new").await;

    eventually("a sees the new b, once", || sees_live(&a, &[("b", "new")])).await?;
    let peers = a.peers().await;
    assert!(peers[0].generation > first_generation, "{peers:?}");
    // The new b hears of its old self from a, but lists only a.
    eventually("b sees a, not itself", || sees_live(&b, &[("a", "a")])).await?;

    for m in [a, b] {
        m.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn settings_out_of_range_are_refused() {
    let mut bad = config("a", SECRET, &[]);
    bad.gossip_interval = Duration::ZERO;
    assert!(matches!(
        Membership::start(bad).await,
        Err(CoreError::InvalidMembershipConfig(_))
    ));
    let mut bad = config("a", SECRET, &[]);
    bad.phi_threshold = f64::NAN;
    assert!(matches!(
        Membership::start(bad).await,
        Err(CoreError::InvalidMembershipConfig(_))
    ));
}
