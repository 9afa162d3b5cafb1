//! `karst groups`: list, describe, delete consumer groups and reset their offsets (like
//! kafka-consumer-groups.sh).
//!
//! - `list` prints one group id per line (`--state` adds the state and protocol type).
//! - `describe --group G` prints, per partition the group has an offset for or a member owns,
//!   the committed offset, the log end offset, the lag and the owning member; then the
//!   members (member id, instance id, client id, host, assigned partitions) and the state.
//! - `delete --group G` (repeatable) deletes groups that have no members.
//! - `reset-offsets --group G --topic T[:P,P..] (--to-earliest | --to-latest | --to-offset N |
//!   --to-datetime T)` prints the plan; only `--execute` commits it (dry run by default, as
//!   Kafka's tool). The group must have no members (Kafka's rule).

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};

use super::topics::{explain, runtime, BootstrapArgs};
use crate::client::consumer::list_offsets;
use crate::client::{Admin, GroupDescription, TopicPartition};

/// Arguments of `karst groups`.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    #[command(subcommand)]
    pub command: GroupsCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List the groups of the cluster.
    List {
        /// Also print each group's state and protocol type.
        #[arg(long)]
        state: bool,
    },
    /// Committed offsets, log end offsets, lag and members of groups.
    Describe {
        /// Group to describe (repeatable).
        #[arg(long, required = true)]
        group: Vec<String>,
        /// Only the members table.
        #[arg(long, conflicts_with = "offsets")]
        members: bool,
        /// Only the offsets table.
        #[arg(long)]
        offsets: bool,
    },
    /// Delete groups without members (and their committed offsets).
    Delete {
        /// Group to delete (repeatable).
        #[arg(long, required = true)]
        group: Vec<String>,
    },
    /// Plan (and with --execute apply) new committed offsets for a group without members.
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[arg(long)]
    pub group: String,
    /// TOPIC or TOPIC:P,P,... (repeatable).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    #[arg(long = "to-earliest", group = "target")]
    pub to_earliest: bool,
    #[arg(long = "to-latest", group = "target")]
    pub to_latest: bool,
    /// An offset; out-of-range values are clamped to the log's range, as Kafka does.
    #[arg(long = "to-offset", group = "target")]
    pub to_offset: Option<i64>,
    /// YYYY-MM-DDTHH:mm:SS[.sss][Z|+HH:MM] (UTC without a zone) or milliseconds since the epoch.
    #[arg(long = "to-datetime", group = "target")]
    pub to_datetime: Option<String>,
    /// Apply the plan (without it, only print it).
    #[arg(long, conflicts_with = "dry_run")]
    pub execute: bool,
    /// Only print the plan (the default).
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

pub fn run(args: GroupsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(run_async(args))
}

async fn run_async(args: GroupsArgs) -> anyhow::Result<()> {
    let bootstrap = &args.bootstrap.bootstrap_server;
    let admin = Admin::new(args.bootstrap.client_config())
        .await
        .map_err(|e| explain(e, bootstrap))?;
    match args.command {
        GroupsCommand::List { state } => {
            for g in admin.list_groups().await? {
                if state {
                    println!("{}\t{}\t{}", g.group_id, g.state, g.protocol_type);
                } else {
                    println!("{}", g.group_id);
                }
            }
        }
        GroupsCommand::Describe {
            group,
            members,
            offsets,
        } => {
            for (group_id, result) in admin.describe_groups(&group).await? {
                let description = result
                    .map_err(|e| anyhow::anyhow!("cannot describe group {group_id:?}: {e}"))?;
                if !members {
                    print_offsets(&admin, &description).await?;
                }
                if !offsets {
                    print_members(&description);
                }
            }
        }
        GroupsCommand::Delete { group } => {
            let mut failed = Vec::new();
            for (group_id, result) in admin.delete_groups(&group).await? {
                if let Err(e) = result {
                    failed.push(format!(
                        "* Group '{group_id}' could not be deleted due to: {e}"
                    ));
                }
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "Deletion of some consumer groups failed:\n{}",
                    failed.join("\n")
                );
            }
            let names: Vec<String> = group.iter().map(|g| format!("'{g}'")).collect();
            println!(
                "Deletion of requested consumer groups ({}) was successful.",
                names.join(", ")
            );
        }
        GroupsCommand::ResetOffsets(reset) => reset_offsets(&admin, reset).await?,
    }
    Ok(())
}

/// The offsets table, in kafka-consumer-groups.sh's column order.
async fn print_offsets(admin: &Admin, group: &GroupDescription) -> anyhow::Result<()> {
    let committed = admin.list_consumer_group_offsets(&group.group_id).await?;
    let mut owner: BTreeMap<TopicPartition, usize> = BTreeMap::new();
    for (i, m) in group.members.iter().enumerate() {
        for tp in &m.assignment {
            owner.insert(tp.clone(), i);
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
    let ends = admin.partition_offsets(&partitions).await;
    if group.members.is_empty() {
        println!(
            "\nConsumer group '{}' has no active members.",
            group.group_id
        );
    }
    println!();
    println!(
        "{:<24} {:<24} {:>9} {:>14} {:>14} {:>8} {:<40} {:<16} CLIENT-ID",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
    );
    for (tp, end) in ends {
        let current = committed.get(&tp).copied();
        let end = end.ok().map(|(_, high)| high);
        let lag = match (current, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".to_string(),
        };
        let member = owner.get(&tp).map(|i| &group.members[*i]);
        println!(
            "{:<24} {:<24} {:>9} {:>14} {:>14} {:>8} {:<40} {:<16} {}",
            group.group_id,
            tp.topic,
            tp.partition,
            current.map_or("-".to_string(), |c| c.to_string()),
            end.map_or("-".to_string(), |e| e.to_string()),
            lag,
            member.map_or("-", |m| m.member_id.as_str()),
            member.map_or("-", |m| m.client_host.as_str()),
            member.map_or("-", |m| m.client_id.as_str()),
        );
    }
    Ok(())
}

/// The members table and the group's state.
fn print_members(group: &GroupDescription) {
    println!();
    println!(
        "Consumer group '{}': state {}, protocol type {:?}, assignor {:?}, coordinator {}",
        group.group_id, group.state, group.protocol_type, group.protocol, group.coordinator
    );
    println!(
        "{:<24} {:<40} {:<16} {:<16} {:<16} {:>12} ASSIGNMENT",
        "GROUP", "CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS"
    );
    for m in &group.members {
        let assignment: Vec<String> = m.assignment.iter().map(|tp| tp.to_string()).collect();
        println!(
            "{:<24} {:<40} {:<16} {:<16} {:<16} {:>12} {}",
            group.group_id,
            m.member_id,
            m.group_instance_id.as_deref().unwrap_or("-"),
            m.client_host,
            m.client_id,
            m.assignment.len(),
            if assignment.is_empty() {
                "-".to_string()
            } else {
                assignment.join(",")
            }
        );
    }
}

async fn reset_offsets(admin: &Admin, args: ResetArgs) -> anyhow::Result<()> {
    let targets = usize::from(args.to_earliest)
        + usize::from(args.to_latest)
        + usize::from(args.to_offset.is_some())
        + usize::from(args.to_datetime.is_some());
    if targets != 1 {
        anyhow::bail!("give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime");
    }
    let described = admin
        .describe_groups(std::slice::from_ref(&args.group))
        .await?;
    let (_, description) = described.into_iter().next().expect("one group asked");
    let description = description?;
    if !matches!(description.state.as_str(), "Empty" | "Dead" | "") {
        anyhow::bail!(
            "Assignments can only be reset if the group '{}' is inactive, but the current \
             state is {}.",
            args.group,
            description.state
        );
    }
    let mut partitions = Vec::new();
    for spec in &args.topic {
        match spec.split_once(':') {
            Some((topic, list)) => {
                for p in list.split(',') {
                    let p: i32 = p.trim().parse().map_err(|_| {
                        anyhow::anyhow!("--topic {spec:?}: partitions must be numbers")
                    })?;
                    partitions.push(TopicPartition::new(topic, p));
                }
            }
            None => {
                let described = admin.describe_topics(std::slice::from_ref(spec)).await?;
                let (_, topic) = described.into_iter().next().expect("one topic asked");
                let topic = topic.map_err(|e| anyhow::anyhow!("topic {spec:?}: {e}"))?;
                partitions.extend(
                    topic
                        .partitions
                        .iter()
                        .map(|p| TopicPartition::new(spec.as_str(), p.partition)),
                );
            }
        }
    }
    let ranges = admin.partition_offsets(&partitions).await;
    let mut plan: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let timestamp = args
        .to_datetime
        .as_deref()
        .map(parse_datetime)
        .transpose()?;
    for (tp, range) in ranges {
        let (earliest, latest) = range.map_err(|e| anyhow::anyhow!("{tp}: {e}"))?;
        let offset = if args.to_earliest {
            earliest
        } else if args.to_latest {
            latest
        } else if let Some(o) = args.to_offset {
            o.clamp(earliest, latest)
        } else {
            let ts = timestamp.expect("one target is set");
            let found = list_offsets(admin.cluster(), &[(tp.clone(), ts)], 0).await;
            match found.into_iter().next().map(|(_, r)| r) {
                Some(Ok((offset, _))) if offset >= 0 => offset,
                // No record at or after the time: the end (Kafka's rule).
                Some(Ok(_)) => latest,
                Some(Err(e)) => anyhow::bail!("{tp}: {e}"),
                None => latest,
            }
        };
        plan.insert(tp, offset);
    }
    println!();
    println!(
        "{:<24} {:<24} {:>9} {:>14}",
        "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"
    );
    for (tp, offset) in &plan {
        println!(
            "{:<24} {:<24} {:>9} {:>14}",
            args.group, tp.topic, tp.partition, offset
        );
    }
    if args.execute {
        admin
            .alter_consumer_group_offsets(&args.group, &plan)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reset the offsets of {:?}: {e}", args.group))?;
    } else {
        eprintln!("Dry run: nothing changed (add --execute to apply).");
    }
    Ok(())
}

/// Kafka's reset-offsets datetime format, or plain epoch milliseconds.
pub(crate) fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad =
        || anyhow::anyhow!("--to-datetime {s:?}: expected YYYY-MM-DDTHH:mm:SS[.sss][Z|+HH:MM]");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-');
    let (year, month, day): (i64, i64, i64) = (
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    // Split off a zone: Z, +HH:MM or -HH:MM.
    let (time, offset_minutes) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (t, sign * (h * 60 + m))
    } else {
        (rest, 0)
    };
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':');
    let (hour, minute, second): (i64, i64, i64) = (
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        t.next()
            .map_or(Some(0), |v| v.parse().ok())
            .ok_or_else(bad)?,
    );
    let millis: i64 = format!("{millis:0<3}")[..3].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + hour) * 60 + minute - offset_minutes) * 60_000 + second * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn datetimes_in_kafkas_reset_format() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00.000").unwrap(), 0);
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_datetime("2023-11-14T23:13:20.5+01:00").unwrap(),
            1_700_000_000_500
        );
        assert_eq!(parse_datetime("1700000000000").unwrap(), 1_700_000_000_000);
        assert!(parse_datetime("2023-13-01T00:00:00").is_err());
        assert!(parse_datetime("yesterday").is_err());
    }
}
