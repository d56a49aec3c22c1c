//! Retention (`store forget`): which sets to keep, as a pure function of the sets and a policy.
//!
//! Policies follow restic: sets are grouped by host and tag set; within a group, newest first,
//! `--keep-last N` keeps the N newest, and each period rule (`hourly`, `daily`, `weekly`,
//! `monthly`, `yearly`; periods in the policy's time zone, local time unless the operator asks
//! for UTC, as restic and Borg count days; weeks are ISO weeks, starting on Monday) keeps the
//! newest set of each of the N newest periods that have a set. `--keep-within D` keeps the sets
//! at most D (`2w`, `1y6mo`: calendar units count in that time zone) older than the group's
//! newest; `--keep-tag T` keeps every set tagged T; `--keep-full N` keeps the N
//! newest full sets with every incremental chained to them. Chains are closed last: a kept
//! incremental keeps every set it builds on, down to its full set, so an incremental is never
//! kept without its chain's full set, and forgetting a full set forgets its incrementals.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::id::SnapshotId;
use crate::snapshot::SetKind;

/// What forget needs to know of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// The set.
    pub id: SnapshotId,
    /// Start time, ns since the epoch.
    pub time_ns: i64,
    /// Host.
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Full or incremental.
    pub kind: SetKind,
    /// The set it builds on.
    pub parent: Option<SnapshotId>,
}

/// A retention policy; zero counts are off.
#[derive(Debug, Clone)]
pub struct KeepPolicy {
    /// Keep the N newest sets.
    pub last: u32,
    /// Keep the newest set of each of the N newest hours with a set.
    pub hourly: u32,
    /// … days.
    pub daily: u32,
    /// … weeks (Monday to Sunday, UTC).
    pub weekly: u32,
    /// … months.
    pub monthly: u32,
    /// … years.
    pub yearly: u32,
    /// Keep sets at most this long before the group's newest set.
    pub within: Option<jiff::Span>,
    /// Keep sets carrying any of these tags.
    pub tags: Vec<String>,
    /// Keep the N newest full sets and every incremental chained to them.
    pub full: u32,
    /// The time zone whose hours, days, weeks, months and years the rules count.
    pub time_zone: jiff::tz::TimeZone,
}

impl Default for KeepPolicy {
    /// No rule, periods in UTC.
    fn default() -> Self {
        KeepPolicy {
            last: 0,
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            within: None,
            tags: Vec::new(),
            full: 0,
            time_zone: jiff::tz::TimeZone::UTC,
        }
    }
}

impl KeepPolicy {
    /// Whether no rule is set (forget would remove everything: refused by callers).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
            && self.full == 0
    }
}

/// Why a set is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepReason {
    /// `--keep-last`.
    Last,
    /// `--keep-hourly`.
    Hourly,
    /// `--keep-daily`.
    Daily,
    /// `--keep-weekly`.
    Weekly,
    /// `--keep-monthly`.
    Monthly,
    /// `--keep-yearly`.
    Yearly,
    /// `--keep-within`.
    Within,
    /// `--keep-tag`.
    Tag(String),
    /// `--keep-full` (the full set or an incremental of its chain).
    Full,
    /// A kept incremental builds on it.
    Chain(SnapshotId),
    /// Not selected for removal.
    NotSelected,
}

/// A set to keep and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The set.
    pub id: SnapshotId,
    /// Every rule that keeps it.
    pub reasons: Vec<KeepReason>,
}

/// The outcome of a retention decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetPlan {
    /// Sets kept, newest first.
    pub keep: Vec<Kept>,
    /// Sets to forget, newest first.
    pub remove: Vec<SnapshotId>,
}

/// A time (ns since the epoch) as a date and time in `tz`.
fn zoned(ns: i64, tz: &jiff::tz::TimeZone) -> jiff::Zoned {
    // Every i64 of nanoseconds is a valid timestamp (years 1677 to 2262).
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(tz.clone())
}

/// The period of a time for a rule, in `tz`, as a comparable key (increasing with time).
fn period(rule: &KeepReason, ns: i64, tz: &jiff::tz::TimeZone) -> i64 {
    let z = zoned(ns, tz);
    let d = z.date();
    let day = i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day());
    match rule {
        KeepReason::Hourly => day * 24 + i64::from(z.hour()),
        KeepReason::Daily => day,
        KeepReason::Weekly => {
            let w = d.iso_week_date();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }
        KeepReason::Monthly => i64::from(d.year()) * 12 + i64::from(d.month()),
        KeepReason::Yearly => i64::from(d.year()),
        _ => 0,
    }
}

/// The oldest time `--keep-within span` keeps, for a group whose newest set is at `newest`.
fn within_cutoff(newest: i64, span: jiff::Span, tz: &jiff::tz::TimeZone) -> i64 {
    zoned(newest, tz)
        .checked_sub(span)
        .map_or(i64::MIN, |z| i64::try_from(z.timestamp().as_nanosecond()).unwrap_or(i64::MIN))
}

/// The full set an incremental chains to (itself for a full set), among `by_id`.
fn chain_root(id: SnapshotId, by_id: &HashMap<SnapshotId, &SetInfo>) -> SnapshotId {
    let mut cur = id;
    let mut seen = HashSet::new();
    while let Some(parent) = by_id.get(&cur).and_then(|s| s.parent) {
        if !by_id.contains_key(&parent) || !seen.insert(cur) {
            break;
        }
        cur = parent;
    }
    cur
}

fn newest_first(sets: &[SetInfo]) -> Vec<&SetInfo> {
    let mut v: Vec<&SetInfo> = sets.iter().collect();
    v.sort_by_key(|s| std::cmp::Reverse((s.time_ns, s.id)));
    v
}

/// Applies `policy` to `sets` (all of them candidates).
#[must_use]
pub fn plan_policy(sets: &[SetInfo], policy: &KeepPolicy) -> ForgetPlan {
    let by_id: HashMap<SnapshotId, &SetInfo> = sets.iter().map(|s| (s.id, s)).collect();
    let mut reasons: HashMap<SnapshotId, Vec<KeepReason>> = HashMap::new();
    let mut groups: BTreeMap<(String, Vec<String>), Vec<&SetInfo>> = BTreeMap::new();
    for s in newest_first(sets) {
        let mut tags = s.tags.clone();
        tags.sort();
        groups.entry((s.host.clone(), tags)).or_default().push(s);
    }
    for group in groups.values() {
        let mut keep = |s: &SetInfo, r: KeepReason| reasons.entry(s.id).or_default().push(r);
        for s in group.iter().take(policy.last as usize) {
            keep(s, KeepReason::Last);
        }
        let rules = [
            (KeepReason::Hourly, policy.hourly),
            (KeepReason::Daily, policy.daily),
            (KeepReason::Weekly, policy.weekly),
            (KeepReason::Monthly, policy.monthly),
            (KeepReason::Yearly, policy.yearly),
        ];
        for (rule, count) in rules {
            let mut left = count;
            let mut last_period = None;
            for s in group {
                if left == 0 {
                    break;
                }
                let p = period(&rule, s.time_ns, &policy.time_zone);
                if last_period != Some(p) {
                    keep(s, rule.clone());
                    last_period = Some(p);
                    left -= 1;
                }
            }
        }
        if let (Some(within), Some(newest)) = (policy.within, group.first()) {
            let cutoff = within_cutoff(newest.time_ns, within, &policy.time_zone);
            for s in group.iter().filter(|s| s.time_ns >= cutoff) {
                keep(s, KeepReason::Within);
            }
        }
        for s in group {
            for t in s.tags.iter().filter(|t| policy.tags.contains(t)) {
                keep(s, KeepReason::Tag(t.clone()));
            }
        }
        if policy.full > 0 {
            let fulls: HashSet<SnapshotId> = group
                .iter()
                .filter(|s| s.kind == SetKind::Full)
                .take(policy.full as usize)
                .map(|s| s.id)
                .collect();
            for s in group.iter().filter(|s| fulls.contains(&chain_root(s.id, &by_id))) {
                keep(s, KeepReason::Full);
            }
        }
    }
    close_chains(sets, &by_id, reasons)
}

/// Forgets `ids` and every set chained to one of them.
#[must_use]
pub fn plan_explicit(sets: &[SetInfo], ids: &[SnapshotId]) -> ForgetPlan {
    let by_id: HashMap<SnapshotId, &SetInfo> = sets.iter().map(|s| (s.id, s)).collect();
    let forgotten = |s: &SetInfo| {
        let mut cur = Some(s.id);
        let mut steps = 0;
        while let Some(id) = cur {
            if ids.contains(&id) {
                return true;
            }
            steps += 1;
            cur = by_id.get(&id).and_then(|s| s.parent).filter(|_| steps <= sets.len());
        }
        false
    };
    let mut plan = ForgetPlan::default();
    for s in newest_first(sets) {
        if forgotten(s) {
            plan.remove.push(s.id);
        } else {
            plan.keep.push(Kept { id: s.id, reasons: vec![KeepReason::NotSelected] });
        }
    }
    plan
}

/// Adds the ancestors of every kept set, and builds the plan.
fn close_chains(
    sets: &[SetInfo],
    by_id: &HashMap<SnapshotId, &SetInfo>,
    mut reasons: HashMap<SnapshotId, Vec<KeepReason>>,
) -> ForgetPlan {
    let kept: Vec<SnapshotId> = reasons.keys().copied().collect();
    for child in kept {
        let mut cur = child;
        let mut steps = 0;
        while let Some(parent) = by_id.get(&cur).and_then(|s| s.parent) {
            if !by_id.contains_key(&parent) || steps > sets.len() {
                break;
            }
            let r = reasons.entry(parent).or_default();
            if !r.contains(&KeepReason::Chain(child)) {
                r.push(KeepReason::Chain(child));
            }
            cur = parent;
            steps += 1;
        }
    }
    let mut plan = ForgetPlan::default();
    for s in newest_first(sets) {
        match reasons.remove(&s.id) {
            Some(mut r) => {
                r.sort();
                r.dedup();
                plan.keep.push(Kept { id: s.id, reasons: r });
            }
            None => plan.remove.push(s.id),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000_000_000;
    const DAY: i64 = 24 * HOUR;

    fn set(
        n: u32,
        time_ns: i64,
        kind: SetKind,
        parent: Option<u32>,
        host: &str,
        tags: &[&str],
    ) -> SetInfo {
        SetInfo {
            id: SnapshotId(Id::hash(&n.to_le_bytes())),
            time_ns,
            host: host.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            kind,
            parent: parent.map(|p| SnapshotId(Id::hash(&p.to_le_bytes()))),
        }
    }

    fn id(n: u32) -> SnapshotId {
        SnapshotId(Id::hash(&n.to_le_bytes()))
    }

    /// The reference model: each rule restated directly (is this set the newest of its period,
    /// and is its period among the N newest periods with a set?), then chains closed naively.
    fn model(sets: &[SetInfo], p: &KeepPolicy) -> HashSet<SnapshotId> {
        let group_of = |s: &SetInfo| {
            let mut t = s.tags.clone();
            t.sort();
            (s.host.clone(), t)
        };
        let newer = |a: &SetInfo, b: &SetInfo| (a.time_ns, a.id) > (b.time_ns, b.id);
        let mut keep = HashSet::new();
        for s in sets {
            let group: Vec<&SetInfo> = sets.iter().filter(|o| group_of(o) == group_of(s)).collect();
            let rank = group.iter().filter(|o| newer(o, s)).count();
            if rank < p.last as usize {
                keep.insert(s.id);
            }
            for (rule, n) in [
                (KeepReason::Hourly, p.hourly),
                (KeepReason::Daily, p.daily),
                (KeepReason::Weekly, p.weekly),
                (KeepReason::Monthly, p.monthly),
                (KeepReason::Yearly, p.yearly),
            ] {
                let tz = &p.time_zone;
                let mine = period(&rule, s.time_ns, tz);
                let newest_in_period =
                    !group.iter().any(|o| period(&rule, o.time_ns, tz) == mine && newer(o, s));
                let newer_periods: HashSet<i64> = group
                    .iter()
                    .map(|o| period(&rule, o.time_ns, tz))
                    .filter(|q| *q > mine)
                    .collect();
                if newest_in_period && newer_periods.len() < n as usize {
                    keep.insert(s.id);
                }
            }
            if let Some(w) = p.within {
                let newest = group.iter().map(|o| o.time_ns).max().unwrap_or(i64::MIN);
                if s.time_ns >= within_cutoff(newest, w, &p.time_zone) {
                    keep.insert(s.id);
                }
            }
            if s.tags.iter().any(|t| p.tags.contains(t)) {
                keep.insert(s.id);
            }
            if p.full > 0 {
                let by_id: HashMap<SnapshotId, &SetInfo> = sets.iter().map(|s| (s.id, s)).collect();
                let root = chain_root(s.id, &by_id);
                let mut fulls: Vec<&&SetInfo> =
                    group.iter().filter(|o| o.kind == SetKind::Full).collect();
                fulls.sort_by_key(|s| std::cmp::Reverse((s.time_ns, s.id)));
                if fulls.iter().take(p.full as usize).any(|f| f.id == root) {
                    keep.insert(s.id);
                }
            }
        }
        // Close chains until nothing changes.
        loop {
            let before = keep.len();
            for s in sets {
                if keep.contains(&s.id) {
                    if let Some(parent) = s.parent.filter(|p| sets.iter().any(|o| o.id == *p)) {
                        keep.insert(parent);
                    }
                }
            }
            if keep.len() == before {
                return keep;
            }
        }
    }

    /// A history: per host, sets every few hours; each full starts a chain of incrementals.
    fn history() -> impl Strategy<Value = Vec<SetInfo>> {
        proptest::collection::vec((1i64..60, 0u8..4, 0u8..2, 0u8..3), 1..60).prop_map(|steps| {
            let mut t = 1_790_000_000_000_000_000i64;
            let mut last_by_group: HashMap<(u8, u8), u32> = HashMap::new();
            steps
                .into_iter()
                .enumerate()
                .map(|(i, (gap_hours, k, host, tag))| {
                    t += gap_hours * HOUR;
                    let n = i as u32;
                    let parent =
                        if k == 0 { None } else { last_by_group.get(&(host, tag)).copied() };
                    last_by_group.insert((host, tag), n);
                    let tags: &[&str] = match tag {
                        0 => &["nightly"],
                        1 => &["weekly"],
                        _ => &[],
                    };
                    let kind = if parent.is_some() { SetKind::Incremental } else { SetKind::Full };
                    set(n, t, kind, parent, if host == 0 { "alf1" } else { "ml1" }, tags)
                })
                .collect()
        })
    }

    fn policy() -> impl Strategy<Value = KeepPolicy> {
        (
            0u32..4,
            0u32..5,
            0u32..8,
            0u32..4,
            0u32..3,
            0u32..2,
            proptest::option::of(0i64..10),
            any::<bool>(),
            0u32..3,
            -12i8..=14,
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, within_days, tag, full, offset)| {
                    KeepPolicy {
                        last,
                        hourly,
                        daily,
                        weekly,
                        monthly,
                        yearly,
                        within: within_days.map(|d| jiff::Span::new().days(d)),
                        tags: if tag { vec!["weekly".into()] } else { vec![] },
                        full,
                        time_zone: jiff::tz::TimeZone::fixed(jiff::tz::offset(offset)),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn policy_matches_the_reference_model(sets in history(), p in policy()) {
            let plan = plan_policy(&sets, &p);
            let kept: HashSet<SnapshotId> = plan.keep.iter().map(|k| k.id).collect();
            prop_assert_eq!(&kept, &model(&sets, &p));
            prop_assert_eq!(kept.len() + plan.remove.len(), sets.len());
            // An incremental is never kept without its chain's full set.
            let by_id: HashMap<SnapshotId, &SetInfo> = sets.iter().map(|s| (s.id, s)).collect();
            for k in &kept {
                prop_assert!(kept.contains(&chain_root(*k, &by_id)));
            }
        }
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let t0 = 1_790_000_000_000_000_000 - 1_790_000_000_000_000_000 % DAY;
        let sets = vec![
            set(1, t0 + HOUR, SetKind::Full, None, "h", &[]),
            set(2, t0 + 5 * HOUR, SetKind::Full, None, "h", &[]),
            set(3, t0 + DAY + HOUR, SetKind::Full, None, "h", &[]),
            set(4, t0 + 2 * DAY + HOUR, SetKind::Full, None, "h", &[]),
        ];
        let plan = plan_policy(&sets, &KeepPolicy { daily: 2, ..KeepPolicy::default() });
        let kept: Vec<SnapshotId> = plan.keep.iter().map(|k| k.id).collect();
        assert_eq!(kept, vec![id(4), id(3)]);
        assert_eq!(plan.remove, vec![id(2), id(1)]);
    }

    // See: issue 13 ("retention buckets in local time by default, as restic and Borg count
    // days"): two nightly sets at 23:30 and 00:30 UTC fall on one day where it is two hours
    // earlier, and on two days in UTC.
    #[test]
    fn days_are_counted_in_the_policy_time_zone() {
        let t0 = 1_790_000_000_000_000_000 - 1_790_000_000_000_000_000 % DAY;
        let sets = vec![
            set(1, t0 + 23 * HOUR + 30 * 60 * 1_000_000_000, SetKind::Full, None, "h", &[]),
            set(2, t0 + DAY + 30 * 60 * 1_000_000_000, SetKind::Full, None, "h", &[]),
        ];
        let daily = |tz: jiff::tz::TimeZone| {
            let plan = plan_policy(
                &sets,
                &KeepPolicy { daily: 2, time_zone: tz, ..KeepPolicy::default() },
            );
            plan.keep.len()
        };
        assert_eq!(daily(jiff::tz::TimeZone::UTC), 2, "two UTC days");
        assert_eq!(daily(jiff::tz::TimeZone::fixed(jiff::tz::offset(-2))), 1, "one local day");
        // A calendar span: one month back from March 31 is February 28 (or 29).
        let march_31 = 1_774_915_200_000_000_000; // 2026-03-31T00:00:00Z
        let cutoff = within_cutoff(march_31, jiff::Span::new().months(1), &jiff::tz::TimeZone::UTC);
        assert_eq!(cutoff, march_31 - 31 * DAY, "2026-02-28");
    }

    #[test]
    fn forgetting_a_full_set_forgets_its_incrementals() {
        let sets = vec![
            set(1, DAY, SetKind::Full, None, "h", &[]),
            set(2, 2 * DAY, SetKind::Incremental, Some(1), "h", &[]),
            set(3, 3 * DAY, SetKind::Incremental, Some(2), "h", &[]),
            set(4, 4 * DAY, SetKind::Full, None, "h", &[]),
        ];
        let plan = plan_explicit(&sets, &[id(1)]);
        assert_eq!(plan.remove, vec![id(3), id(2), id(1)]);
        // Keeping the newest incremental keeps its whole chain.
        let plan = plan_policy(&sets, &KeepPolicy { last: 1, ..KeepPolicy::default() });
        assert_eq!(plan.keep.len(), 1);
        let sets2 = [sets[0].clone(), sets[1].clone(), sets[2].clone()];
        let plan = plan_policy(&sets2, &KeepPolicy { last: 1, ..KeepPolicy::default() });
        let kept: HashSet<SnapshotId> = plan.keep.iter().map(|k| k.id).collect();
        assert_eq!(kept, [id(1), id(2), id(3)].into_iter().collect());
        // --keep-full 1 keeps the newest full and its chain only.
        let plan = plan_policy(&sets, &KeepPolicy { full: 1, ..KeepPolicy::default() });
        assert_eq!(plan.remove, vec![id(3), id(2), id(1)]);
    }
}
