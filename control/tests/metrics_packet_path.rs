//! Prometheus output after real traffic: frames through the model, publisher and worker on
//! the memory port, then `MetricsSource::render` checked series by series.

mod common;

use common::*;
use l3ns_control::metrics::MetricsSource;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn metrics_after_traffic_count_deliveries_and_drops_by_reason() {
    let mut n = net();
    let mut s1 = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    let mut frames: Vec<Vec<u8>> = (0..5).map(|i| udp_to(WEB1_IP, 9, &[i; 10])).collect();
    frames.extend((0..3).map(|_| udp_to(WEB2_IP, 9, b"nobody listens")));
    frames.extend((0..2).map(|_| udp_to(Ipv4Addr::new(10, 0, 0, 77), 9, b"not ours")));
    frames.push(udp_to(BCAST, 9, b"everyone"));
    n.inject(frames);
    let mut got = 0;
    while s1.try_recv().is_some() {
        got += 1;
    }
    assert_eq!(got, 6);

    let text = MetricsSource::from_runtime(&n.rt).render();
    let s = samples(&text);
    let want: &[(&str, f64)] = &[
        (r#"l3ns_namespace_rx_packets_total{namespace="web1"}"#, 6.0),
        (
            r#"l3ns_namespace_rx_bytes_total{namespace="web1"}"#,
            5.0 * 38.0 + 36.0,
        ),
        (
            r#"l3ns_namespace_delivered_packets_total{namespace="web1"}"#,
            5.0,
        ),
        (
            r#"l3ns_namespace_broadcast_delivered_packets_total{namespace="web1"}"#,
            1.0,
        ),
        (
            r#"l3ns_namespace_delivered_packets_total{namespace="web2"}"#,
            0.0,
        ),
        (r#"l3ns_namespace_rx_packets_total{namespace="web2"}"#, 3.0),
        (
            r#"l3ns_namespace_dropped_packets_total{namespace="web2",reason="no_socket"}"#,
            3.0,
        ),
        (
            r#"l3ns_namespace_dropped_packets_total{namespace="web1",reason="no_socket"}"#,
            0.0,
        ),
        (
            r#"l3ns_namespace_dropped_packets_total{namespace="web1",reason="queue_full"}"#,
            0.0,
        ),
        (r#"l3ns_namespace_rx_packets_total{namespace="root"}"#, 0.0),
        (r#"l3ns_port_rx_packets_total{port="eth0"}"#, 11.0),
        (
            r#"l3ns_port_dropped_packets_total{port="eth0",reason="unclaimed"}"#,
            2.0,
        ),
        (r#"l3ns_icmp_unreachable_sent_total{port="eth0"}"#, 3.0),
        (r#"l3ns_port_tx_packets_total{port="eth0"}"#, 3.0),
        (
            r#"l3ns_socket_received_packets_total{namespace="web1",socket="1",local="0.0.0.0:9"}"#,
            6.0,
        ),
        (
            r#"l3ns_socket_queue_depth{namespace="web1",socket="1",local="0.0.0.0:9"}"#,
            0.0,
        ),
        (
            r#"l3ns_control_operations_total{op="sock_bind",result="ok"}"#,
            1.0,
        ),
        (
            r#"l3ns_control_operations_total{op="addr_push",result="ok"}"#,
            2.0,
        ),
        ("l3ns_snapshot_version", n.rt.version() as f64),
    ];
    for (k, v) in want {
        assert_eq!(s.get(*k), Some(v), "{k} in\n{text}");
    }
    assert!(s[r#"l3ns_worker_polls_total{worker="0",kind="busy"}"#] >= 1.0);
    assert_eq!(
        s["l3ns_snapshot_publish_seconds_count"],
        1.0 + n
            .rt
            .ops
            .iter()
            .filter(|((_, r), _)| *r == "ok")
            .map(|(_, c)| *c as f64)
            .sum::<f64>(),
        "the start-up build, then one publish per successful operation of this setup"
    );
}
