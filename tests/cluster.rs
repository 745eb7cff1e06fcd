//! Clusters of real `telemetry-node` processes on loopback: seed-list discovery, routing by GPU,
//! scatter-gather from any node, kill -9 and restart, a join mid-stream, a frozen node, and a
//! stranger with the wrong cookie.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use telemetry_api::{ClusterView, FleetPage, GpuList};

use crate::support::{
    all_points, complete, eventually, reference_csv, wait_live, wait_stored, Member, Node, COOKIE,
};
use serde_json::Value;

/// Every node sees three members up, is ready, stores all `rows` and answers the same points.
async fn formed_and_complete(nodes: &[&Node], rows: u64) {
    for n in nodes {
        wait_live(n, 3).await;
    }
    wait_stored(nodes[0], rows, Duration::from_secs(60)).await;
    let mut answers = Vec::new();
    for n in nodes {
        let (status, _) = n.get("/readyz").await;
        assert_eq!(status, 200, "{} not ready", n.url);
        answers.push(all_points(n).await);
    }
    assert_eq!(answers[0].0 as u64, rows);
    assert!(answers.iter().all(|a| *a == answers[0]));
}

/// Members 1..=2 store only; member 0 (the seed) streams 20 passes of the reference CSV stamped
/// with the current time (20 × rows distinct samples) at 5,000 samples/s, about 10 s. Returns the
/// row count and the running nodes, member 0 first, once all three are live.
async fn twenty_passes(tmp: &Path, m: &[Member]) -> (u64, Vec<Node>) {
    let csv = reference_csv(tmp);
    let rows = rows(&csv);
    let seed = m[0].cluster.clone();
    let n1 = m[1].start(tmp, &seed, COOKIE, &["--no-stream"]);
    let n2 = m[2].start(tmp, &seed, COOKIE, &["--no-stream"]);
    let csv_arg = csv.to_str().expect("utf8");
    let stream = ["--csv", csv_arg, "--rate", "5000", "--passes", "20"];
    let n0 = m[0].start(tmp, &seed, COOKIE, &stream);
    wait_live(&n0, 3).await;
    (rows, vec![n0, n1, n2])
}

/// Samples the streaming node (member 0) had acknowledged.
async fn acked(node: &Node) -> u64 {
    node.cluster().await.members[0].samples_acked
}

/// Waits until member 0's stream is under way (some samples acknowledged).
async fn streaming(node: &Node) -> u64 {
    eventually(
        "the stream under way",
        Duration::from_secs(30),
        async || match acked(node).await {
            0 => Err("nothing acknowledged yet".to_string()),
            n => Ok(n),
        },
    )
    .await
}

/// Waits until `node` sees the member `name` with `status` (`up` or `down`).
async fn member_is(node: &Node, name: &str, status: &str) {
    let what = format!("{name} {status}");
    eventually(&what, Duration::from_secs(30), async || {
        let c = node.cluster().await;
        let seen = c
            .members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.status.as_str());
        match seen {
            Some(s) if s == status => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Members 0 and 1 store only; member 2 streams the reference CSV once with its own timestamps
/// and `extra` flags. Returns the row count and the three nodes once every row is stored.
async fn one_pass(tmp: &Path, m: &[Member], extra: &[&str]) -> (u64, [Node; 3], Value) {
    let csv = reference_csv(tmp);
    let rows = rows(&csv);
    let seed = m[0].cluster.clone();
    let n0 = m[0].start(tmp, &seed, COOKIE, &["--no-stream"]);
    let n1 = m[1].start(tmp, &seed, COOKIE, &["--no-stream"]);
    wait_live(&n0, 2).await;
    let csv_arg = csv.to_str().expect("utf8");
    let mut stream = vec!["--csv", csv_arg, "--passes", "1", "--timestamps", "csv"];
    stream.extend(extra);
    let n2 = m[2].start(tmp, &seed, COOKIE, &stream);
    let c = wait_stored(&n0, rows, Duration::from_secs(60)).await;
    (rows, [n0, n1, n2], c)
}

fn rows(csv: &Path) -> u64 {
    crate::support::csv_rows(csv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_identically_and_each_stores_a_share() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    // Ten streamers share the file by GPU: each row is streamed once.
    let (rows, nodes, c) = one_pass(tmp.path(), &m, &["--rate", "200", "--streamers", "10"]).await;
    let view: ClusterView = serde_json::from_value(c).expect("a cluster view");
    assert_eq!(view.samples_stored, rows);
    for member in &view.members {
        assert_eq!(member.status, "up");
        assert!(member.samples_stored > 0, "no share: {member:?}");
    }
    let (count, first) = all_points(&nodes[0]).await;
    assert_eq!(count as u64, rows);
    for node in &nodes[1..] {
        let (_, other) = all_points(node).await;
        assert_eq!(other, first, "{} answers differently", node.url);
    }
    let gpus: GpuList = nodes[2].typed("/api/v1/gpus?limit=10000").await;
    assert_eq!(gpus.total as u64, rows / 10);
    // The fleet table's newest values are gathered from the owners: the same from every node,
    // every GPU with its 10 metrics.
    let fleet = nodes[0].ok("/api/v1/latest?limit=10000").await;
    let page: FleetPage = serde_json::from_value(fleet.clone()).expect("a fleet page");
    assert!(!page.partial);
    for item in &page.items {
        assert_eq!(item.latest.len(), 10, "{item:?}");
    }
    for node in &nodes[1..] {
        assert_eq!(
            node.ok("/api/v1/latest?limit=10000").await["items"],
            fleet["items"]
        );
    }
    let streaming = view
        .members
        .iter()
        .find(|m| m.name == "telemetry-2")
        .expect("the streaming member");
    assert_eq!(streaming.rows_read, rows, "each row read once");
    for n in nodes {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_member_mid_stream_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let (rows, mut nodes) = twenty_passes(tmp.path(), &m).await;
    streaming(&nodes[0]).await;
    let n2 = nodes.pop().expect("member 2");
    n2.signal("KILL");
    drop(n2);
    let before = acked(&nodes[0]).await;
    assert!(
        before < 20 * rows,
        "the stream ended before the kill; test proves nothing"
    );
    member_is(&nodes[0], "telemetry-2", "down").await;
    nodes.push(m[2].start(tmp.path(), &m[0].cluster, COOKIE, &["--no-stream"]));
    wait_live(&nodes[0], 3).await;
    wait_stored(&nodes[0], 20 * rows, Duration::from_secs(120)).await;
    assert_eq!(acked(&nodes[0]).await, 20 * rows);
    let (count, _) = all_points(&nodes[1]).await;
    assert_eq!(count as u64, 20 * rows, "distinct samples in the cluster");
    for n in nodes {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_mid_stream_and_takes_a_quarter() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..4).map(Member::new).collect();
    let (rows, mut nodes) = twenty_passes(tmp.path(), &m).await;
    streaming(&nodes[0]).await;
    let n3 = m[3].start(tmp.path(), &m[0].cluster, COOKIE, &["--no-stream"]);
    let before = acked(&nodes[0]).await;
    assert!(
        before < 20 * rows,
        "the stream ended before the join; test proves nothing"
    );
    wait_live(&n3, 4).await;
    let c = n3.cluster().await;
    let owned = c.members[0].partitions_owned;
    // Rendezvous hashing gives the joiner about 16 / 4 = 4 partitions.
    assert!(
        (1..=8).contains(&owned),
        "the joiner owns {owned} of 16: {c:?}"
    );
    wait_stored(&n3, 20 * rows, Duration::from_secs(120)).await;
    let (count, _) = all_points(&n3).await;
    assert_eq!(count as u64, 20 * rows, "distinct samples in the cluster");
    nodes.push(n3);
    for n in nodes {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_makes_answers_partial_then_rejoins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let (rows, [n0, n1, n2], _) = one_pass(tmp.path(), &m, &["--rate", "2000"]).await;

    n2.signal("STOP");
    // Answers turn partial and name the frozen node (its liveness timeout is 2 s).
    let partial = eventually("answers partial", Duration::from_secs(30), async || {
        let g = n0.ok("/api/v1/gpus?limit=10000").await;
        if g["partial"] == true {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    })
    .await;
    assert_eq!(
        partial["unavailable_nodes"],
        serde_json::json!(["telemetry-2"])
    );
    let t = n1.ok("/api/v1/metrics").await;
    assert_eq!(t["partial"], true);
    // Frozen until both others marked it down (its sessions dropped), then thawed: it rejoins.
    member_is(&n0, "telemetry-2", "down").await;
    member_is(&n1, "telemetry-2", "down").await;
    n2.signal("CONT");
    wait_live(&n0, 3).await;
    complete(&n0, "/api/v1/gpus?limit=1").await;
    let (count, _) = all_points(&n0).await;
    assert_eq!(count as u64, rows);
    for n in [n0, n1, n2] {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cookie_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let seed = m[0].cluster.clone();
    let n0 = m[0].start(tmp.path(), &seed, COOKIE, &["--no-stream"]);
    let n1 = m[1].start(tmp.path(), &seed, COOKIE, &["--no-stream"]);
    wait_live(&n0, 2).await;
    let stranger = m[2].start(tmp.path(), &seed, "not-the-cookie", &["--no-stream"]);
    // ractor_cluster ends the stranger's session with the seed as `auth_fail`.
    eventually(
        "the stranger refused",
        Duration::from_secs(30),
        async || {
            let log = n0.log_text();
            let mut lines = log.lines();
            if lines.any(|l| l.contains("telemetry-2@") && l.contains("auth_fail")) {
                Ok(())
            } else {
                Err("no refusal logged yet".to_string())
            }
        },
    )
    .await;
    for node in [&n0, &n1] {
        let c = node.cluster().await;
        let names: HashSet<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
        assert!(
            !names.contains("telemetry-2"),
            "the stranger is a member: {c:?}"
        );
        assert_eq!(c.live.len(), 2);
    }
    assert_eq!(stranger.cluster().await.live, ["telemetry-2"]);
    for n in [n0, n1, stranger] {
        n.stop();
    }
}

/// The first node of a cluster has a cookie and no seeds; the others name it as their seed.
/// Whichever starts first, the cluster forms, every answer is complete, and the first node
/// rejoins after a restart with the same flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_node_needs_no_seeds_whichever_starts_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = rows(&csv);
    let csv_arg = csv.to_str().expect("utf8");
    let stream = [
        "--csv",
        csv_arg,
        "--passes",
        "1",
        "--timestamps",
        "csv",
        "--rate",
        "0",
    ];
    for first_node_first in [true, false] {
        let dir = tmp.path().join(format!("first-{first_node_first}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let m: Vec<Member> = (0..3).map(Member::new).collect();
        let seed = m[0].cluster.clone();
        let first = || m[0].start_seeded(&dir, None, COOKIE, &["--no-stream"]);
        let n0 = first_node_first.then(first);
        let n1 = m[1].start(&dir, &seed, COOKIE, &["--no-stream"]);
        let n2 = m[2].start(&dir, &seed, COOKIE, &stream);
        let n0 = n0.unwrap_or_else(first);
        formed_and_complete(&[&n0, &n1, &n2], rows).await;
        if first_node_first {
            n0.stop();
            let n0 = first();
            formed_and_complete(&[&n0, &n1, &n2], rows).await;
        }
    }
    // Without a cookie a node is alone and says so.
    let alone = Node::start_env(
        &tmp.path().join("alone"),
        &["--no-stream"],
        &[("RUST_LOG", "info")],
    );
    let (status, _) = alone.get("/readyz").await;
    assert_eq!(status, 200);
    assert!(alone.stop_and_log().contains("standalone"));
}
