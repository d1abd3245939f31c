//! Adoption: jobs stored by a build whose kind had no limit or no `fair_by` lack the key this
//! build claims them by, and jobs stored by a build whose kind had options this build's kind
//! no longer has carry keys none of this build's claims read. A worker that knows such a kind
//! renders the keys from each waiting job's arguments, as its own enqueue would, and writes
//! them, so that the job runs under the options of the build that claims it. A rolling deploy
//! thus strands nothing: jobs of a kind that gained `fair_by` take their turn by key, jobs of
//! a kind that gained a limit hold its slots like any other, and jobs of a kind that lost its
//! options run as plain jobs.
//!
//! It runs as the worker starts and then with the rescuer's other rare work, a bounded number
//! of jobs at a time: such jobs exist only across a deploy. (While old and new builds run side
//! by side, each adopts the jobs to its own options; a job runs under the options of the build
//! whose worker claims it, either way.)

use super::Runner;

/// Jobs adopted per statement.
const BATCH: usize = 500;

/// Batches per pass: the rest waits for the next pass.
const BATCHES_PER_PASS: usize = 20;

/// Adopts waiting jobs of this worker's kinds stored without their kind's keys or with keys
/// of options it no longer has. Returns how many it adopted.
pub(super) async fn adopt(runner: &Runner) -> u64 {
    let fair: Vec<&str> = runner.fair_kinds.clone();
    let limited: Vec<&str> = runner.limits.iter().map(|l| l.kind).collect();
    let plain = &runner.free_kinds;
    let store = runner.client.store();
    let mut adopted = 0;
    for _ in 0..BATCHES_PER_PASS {
        let found = match store.unkeyed(&fair, &limited, plain, BATCH).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "looking for jobs stored without their keys failed");
                break;
            }
        };
        let jobs: Vec<_> = found
            .iter()
            .filter_map(|(id, kind, args)| {
                let registration = runner.registry.get(kind.as_str())?;
                let keys = (registration.keys)(args).unwrap_or_else(|err| {
                    // Claimed all the same, the job fails to decode there and dies with that
                    // error, like any job whose arguments this build cannot read.
                    tracing::warn!(worker = %runner.id, job = %id, kind, error = %err, "arguments do not decode; adopting the job under its kind's key");
                    crate::store::Keys {
                        limit: registration.options.is_limited().then(|| kind.clone()),
                        fair: registration.options.fair.then(String::new),
                    }
                });
                Some((*id, keys))
            })
            .collect();
        match store.adopt(&jobs).await {
            Ok(n) => adopted += n,
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "writing the keys of jobs stored without them failed");
                break;
            }
        }
        if found.len() < BATCH {
            break;
        }
    }
    if adopted > 0 {
        tracing::info!(worker = %runner.id, jobs = adopted, "adopted jobs stored by a build with other limits or fair_by than this build's");
        // Claims of fair and limited kinds may have found nothing a moment ago.
        runner.woken();
    }
    adopted
}
