//! Topic ids are unique for all time (KIP-516): a client caches them and, from Fetch v13,
//! reads by them, so an id that came back for another topic would make it read that topic's
//! records. A node restarted on a wiped data directory with the same `karst.seed` (as the
//! simulator runs it) must not hand out the ids of its first life again. (Found by the
//! simulator, groups seeds 536, 647 and 704: after a wipe, `__consumer_offsets` got the old id
//! of the workload's topic and a consumer read offset commits as records.)

mod client_support;

use client_support::Node;
use karst::client::{Admin, ClientConfig, NewTopic};

async fn create_and_describe(bootstrap: &str, topic: &str) -> uuid::Uuid {
    let admin = Admin::new(ClientConfig::new(bootstrap)).await.unwrap();
    let results = admin
        .create_topics(&[NewTopic::new(topic, 1, 1)], false)
        .await
        .unwrap();
    results[0].1.clone().unwrap();
    let described = admin.describe_topics(&[topic.to_string()]).await.unwrap();
    described[0].1.clone().unwrap().topic_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_with_the_same_seed_does_not_reuse_topic_ids() {
    let seed = ["--set", "karst.seed=7"];
    let first_life = {
        let node = Node::start(&seed);
        create_and_describe(&node.bootstrap(), "first").await
    };
    // A fresh data directory, the same seed: the first topic of the second life.
    let node = Node::start(&seed);
    let second_life = create_and_describe(&node.bootstrap(), "second").await;
    assert!(!first_life.is_nil() && !second_life.is_nil());
    assert_ne!(
        first_life, second_life,
        "the restarted node gave topic \"second\" the id topic \"first\" had"
    );
}
