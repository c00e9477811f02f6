//! Cluster mode with real processes: several `picloud serve` processes (the real binary)
//! on one fresh PostgreSQL schema, driven over loopback HTTP like an operator would.
//! docs/cluster.md describes what is proven here; the figures it prints (catalog
//! propagation, failover) are measured in the same run and bounded only generously.
mod node; // a `picloud serve` process of the cluster, and the database they share

mod failover; // kill -9 of a node during a burst: exactly-once, failover time, nodes list
mod propagation; // every node serves; a deploy through one node reaches another (p50/p99)
mod reconnect; // a node cut off from PostgreSQL catches up when it reconnects
mod schedule; // three nodes, one cron trigger: one fire per slot
mod start; // bad input at start: another secrets key; two managers
mod throughput; // events/s through one node and through two (printed)
