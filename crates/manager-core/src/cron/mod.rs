//! Cron triggers: when a schedule fires (`schedule`: pure functions of `now`) and the
//! scheduler that fires them (`scheduler`).
mod schedule; // wall-clock slots in a time zone, daylight saving, catch-up
mod scheduler; // one queue of next fires, woken by the earliest one or a catalog change

pub use schedule::{CronError, HORIZON_YEARS, Schedule, due_slot, next_fire, validate};
pub use scheduler::{CronCounts, CronScheduler};
