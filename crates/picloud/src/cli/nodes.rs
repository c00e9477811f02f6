//! `picloud nodes`: every node of the cluster, with its role, address, version, start,
//! last heartbeat, in-flight events, executor queue depth, open realtime streams and
//! whether it is up or down.
use serde_json::Value;

use super::client::Api;
use super::output::{field, items, print, table, time_field};

pub async fn run(api: &Api, json: bool) -> anyhow::Result<()> {
    let answer = api.get(&["nodes"], &[]).await?;
    print(json, &answer, format_nodes);
    Ok(())
}

fn format_nodes(answer: &Value) -> String {
    let nodes = items(answer, "nodes");
    if nodes.is_empty() {
        return "no nodes registered".to_owned();
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                field(n, "id"),
                field(n, "role"),
                field(n, "address"),
                field(n, "version"),
                time_field(n, "started_at"),
                time_field(n, "last_heartbeat"),
                field(n, "in_flight"),
                field(n, "queue_depth"),
                field(n, "realtime_streams"),
                field(n, "status"),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ROLE",
            "ADDRESS",
            "VERSION",
            "STARTED",
            "HEARTBEAT",
            "IN-FLIGHT",
            "QUEUE",
            "STREAMS",
            "STATUS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn the_nodes_command_takes_no_arguments() {
        let (_, command) = parse(&["nodes"]).expect("parses");
        assert!(matches!(command, Command::Nodes));
        assert!(parse(&["nodes", "extra"]).is_err());
    }

    #[test]
    fn nodes_show_as_a_table_with_their_status() {
        let out = format_nodes(&json!({"nodes": [
            {"id": "node-a", "role": "all", "address": "http://127.0.0.1:8080", "version": "0.1.0",
             "started_at": "2026-12-03T10:00:00.5Z", "last_heartbeat": "2026-12-03T10:05:00Z",
             "in_flight": 12, "queue_depth": 3, "realtime_streams": 4077, "status": "up"},
            {"id": "node-b", "role": "node", "address": "http://10.0.0.2:8080", "version": "0.1.0",
             "started_at": "2026-12-03T09:00:00Z", "last_heartbeat": "2026-12-03T09:30:00Z",
             "in_flight": 0, "queue_depth": 0, "realtime_streams": 0, "status": "down"}
        ]}));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with("ID") && lines[0].ends_with("STATUS"),
            "{out}"
        );
        assert!(lines[1].contains("node-a") && lines[1].contains("2026-12-03 10:00:00"));
        assert!(lines[1].contains("12") && lines[1].ends_with("up"), "{out}");
        assert!(
            lines[1].contains("4077") && lines[0].contains("STREAMS"),
            "{out}"
        );
        assert!(lines[2].contains("http://10.0.0.2:8080") && lines[2].ends_with("down"));
        assert_eq!(format_nodes(&json!({"nodes": []})), "no nodes registered");
    }
}
