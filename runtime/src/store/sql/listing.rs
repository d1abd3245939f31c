//! Reading jobs: one by id, and the listings and counts of the query API, whose conditions
//! are written for the filter at hand so that the database plans each for its indexes.

use super::{count, Both, Dialect, Named, Value};
use super::{first, named, op_error, SqlRow, SqlStore};
use crate::error::Error;
use crate::info::JobInfo;
use crate::job::{JobId, JobState};
use crate::query::{JobFilter, Page};

/// `id`: the columns [`SqlRow::job`] reads.
pub(super) static JOB: Named = Named::new(Both {
    postgres: concat!(pg_select_job!(), " WHERE id = $id"),
    sqlite: concat!(lite_select_job!(), " WHERE id = $id"),
});

/// The columns [`SqlRow::job`] reads, `FROM errand_jobs`: listings add their conditions
/// ([`job_conditions`]).
pub(super) const SELECT_JOBS: Both = Both {
    postgres: pg_select_job!(),
    sqlite: lite_select_job!(),
};

/// The conditions of a listing or count by `filter` (its states only `with_states`), `AND`ed (`1 = 1` for none), their values
/// appended to `values`. Only conditions that are set are written, so that the database plans
/// each listing for the indexes it can use; every value is bound.
fn job_conditions<'a, D: Dialect>(
    filter: &'a JobFilter,
    with_states: bool,
    values: &mut Vec<Value<'a>>,
) -> String {
    let mut conditions = Vec::new();
    let bind = |values: &mut Vec<Value<'a>>, value: Value<'a>| {
        values.push(value);
        values.len()
    };
    // One state is an equality, so that an index on `(state, id)` gives the rows in id order.
    let states = if with_states {
        filter.states.as_slice()
    } else {
        &[]
    };
    match states {
        [] => {}
        [state] => {
            let n = bind(values, state.as_str().into());
            conditions.push(format!("state = {}", D::param(n)));
        }
        states => {
            let states = states.iter().map(|s| s.as_str()).collect();
            let n = bind(values, Value::Texts(states));
            conditions.push(D::among("state", n));
        }
    }
    let equal = [
        ("queue", filter.queue.as_deref()),
        ("kind", filter.kind.as_deref()),
        ("idempotency_key", filter.key.as_deref()),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            let n = bind(values, value.into());
            conditions.push(format!("{column} = {}", D::param(n)));
        }
    }
    if let Some(tag) = filter.tag.as_deref() {
        let n = bind(values, tag.into());
        conditions.push(D::has_tag(n));
    }
    let ranges = [
        ("created_at >=", filter.created_after_ms),
        ("created_at <", filter.created_before_ms),
        ("finished_at >=", filter.finished_after_ms),
        ("finished_at <", filter.finished_before_ms),
    ];
    for (condition, value) in ranges {
        if let Some(value) = value {
            let n = bind(values, value.into());
            conditions.push(format!("{condition} {}", D::param(n)));
        }
    }
    if conditions.is_empty() {
        "1 = 1".to_owned()
    } else {
        conditions.join(" AND ")
    }
}

/// A page of the jobs matching `filter`: the statement and its values.
///
/// A listing by queue (of any state), or by several states, is read state by state: one branch per state,
/// each the first page of that state's jobs in id order from the index on `(queue, state,
/// id)` or `(state, id)`, then the branches' rows merged. So a page costs a few index reads
/// whatever the table holds, where filtering rows read in id order would walk every job of
/// the other queues and states.
pub(crate) fn listing<D: Dialect>(filter: &JobFilter, page: Page) -> (String, Vec<Value<'_>>) {
    let by_state = filter.kind.is_none()
        && filter.key.is_none()
        && (filter.states.len() > 1 || (filter.queue.is_some() && filter.states.is_empty()));
    let states: &[JobState] = match (by_state, filter.states.is_empty()) {
        (false, _) => &[],
        (true, true) => &JobState::ALL,
        (true, false) => &filter.states,
    };
    let mut values = Vec::new();
    // The branches bind their states themselves.
    let conditions = job_conditions::<D>(filter, !by_state, &mut values);
    let (after, order, start) = if page.newest_first {
        ("id <", "DESC", page.after.map_or(i64::MAX, JobId::get))
    } else {
        ("id >", "ASC", page.after.map_or(0, JobId::get))
    };
    values.push(start.into());
    let after = format!("{after} {}", D::param(values.len()));
    values.push(count(page.limit).into());
    let limit = D::param(values.len());
    let select = SELECT_JOBS.of::<D>();
    if states.is_empty() {
        let sql =
            format!("{select} WHERE {conditions} AND {after} ORDER BY id {order} LIMIT {limit}");
        return (sql, values);
    }
    let mut branches = Vec::new();
    for (i, state) in states.iter().enumerate() {
        values.push(state.as_str().into());
        let state = D::param(values.len());
        branches.push(format!(
            "SELECT * FROM ({select} WHERE {conditions} AND state = {state} AND {after}
             ORDER BY id {order} LIMIT {limit}) AS s{i}"
        ));
    }
    let sql = format!(
        "{} ORDER BY id {order} LIMIT {limit}",
        branches.join(" UNION ALL ")
    );
    (sql, values)
}

/// How many jobs match `filter`: the statement and its values.
pub(crate) fn counting<D: Dialect>(filter: &JobFilter) -> (String, Vec<Value<'_>>) {
    let mut values = Vec::new();
    let conditions = job_conditions::<D>(filter, true, &mut values);
    let sql = format!("SELECT count(*) FROM errand_jobs WHERE {conditions}");
    (sql, values)
}

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        let op = || format!("read job {id}");
        let rows = self.rows(&JOB, params![id: id.get()], op).await?;
        rows.first().map(|row| row.job(D::STORE)).transpose()
    }

    pub(crate) async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: Page,
    ) -> Result<Vec<JobInfo>, Error> {
        let (sql, values) = listing::<D>(filter, page);
        let rows = self.fetch(&sql, values, named("list jobs")).await?;
        Self::jobs_from(&rows)
    }

    pub(crate) async fn count_jobs(&self, filter: &JobFilter) -> Result<u64, Error> {
        let (sql, values) = counting::<D>(filter);
        let op = named("count jobs");
        let rows = self.fetch(&sql, values, op).await?;
        let counted = first(rows).map(|row| row.int(0)).transpose();
        let counted = counted.map_err(|e| op_error::<D>(op(), e))?;
        Ok(counted.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    pub(crate) fn jobs_from(rows: &[D::Row]) -> Result<Vec<JobInfo>, Error> {
        rows.iter().map(|row| row.job(D::STORE)).collect()
    }
}

#[cfg(test)]
pub(crate) mod cases {
    use crate::job::JobId;
    use crate::job::JobState::{Available, Completed, Dead, Scheduled};
    use crate::query::{JobFilter, Page};

    /// `kind, queue, state, count, tagged` of the rows to insert, in order; each row's key is
    /// `<kind>-<n>`, its times `n`, and a tagged row's tags `["vip"]`.
    pub(crate) const FILL: [(&str, &str, &str, i64, bool); 3] = [
        ("charge", "mail", "dead", 2_000, true),
        ("charge", "mail", "available", 100, false),
        ("k", "bulk", "completed", 1_000_000, false),
    ];

    /// Listings an operator asks for, by name.
    pub(crate) fn listings() -> Vec<(&'static str, JobFilter, Page)> {
        let newest = Page::first(50).newest_first();
        let oldest = Page::first(50);
        vec![
            ("dead, newest", JobFilter::all().state(Dead), newest),
            (
                "dead in a queue",
                JobFilter::all().state(Dead).queue("mail"),
                oldest,
            ),
            ("a kind", JobFilter::all().kind("charge"), newest),
            (
                "waiting",
                JobFilter::all().states([Available, Scheduled]),
                oldest,
            ),
            ("everything, newest", JobFilter::all(), newest),
            (
                "a key",
                JobFilter::all().kind("charge").key("charge-7"),
                oldest,
            ),
            ("a queue", JobFilter::all().queue("mail"), newest),
            ("a tag", JobFilter::all().tag("vip"), newest),
            (
                "finished before",
                JobFilter::all()
                    .state(Completed)
                    .finished_before(std::time::SystemTime::now()),
                newest,
            ),
            (
                "deep page",
                JobFilter::all().state(Completed),
                Page::after(JobId::new(500_000), 50),
            ),
        ]
    }

    /// Counts, by name.
    pub(crate) fn counts() -> Vec<(&'static str, JobFilter)> {
        vec![
            ("count dead", JobFilter::all().state(Dead)),
            ("count a kind", JobFilter::all().kind("charge")),
        ]
    }
}
