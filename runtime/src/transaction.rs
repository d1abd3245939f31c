//! The caller's own database transactions, which jobs can be enqueued and completed in: the
//! sealed [`Transaction`] trait and its implementations for each store's transaction and
//! connection types.

/// A database transaction a job can be enqueued or completed in: `sqlx::Transaction` or a
/// connection, of SQLite or PostgreSQL (with the matching cargo feature).
pub trait Transaction: sealed::Sealed + Send {}

pub(crate) mod sealed {
    use std::future::Future;

    use crate::error::Error;
    use crate::job::JobId;
    use crate::store::{Inserted, NewJob};

    pub trait Sealed {
        fn insert_job(
            &mut self,
            job: &NewJob,
        ) -> impl Future<Output = Result<Inserted, Error>> + Send;

        /// Inserts jobs that are not unique, in one statement; their ids in order.
        fn insert_jobs(
            &mut self,
            jobs: &[NewJob],
        ) -> impl Future<Output = Result<Vec<JobId>, Error>> + Send;

        /// Stores a workflow named `name` of kind `kind` (`workflow`, `batch`, `saga`); its id.
        fn insert_workflow(
            &mut self,
            name: &str,
            kind: &'static str,
        ) -> impl Future<Output = Result<i64, Error>> + Send;

        /// Whether the job was running under this fence and is now completed.
        fn complete_job(
            &mut self,
            id: JobId,
            fence: i64,
        ) -> impl Future<Output = Result<bool, Error>> + Send;
    }
}

/// Implements [`Transaction`] for a database's transaction and connection types.
macro_rules! transaction_impls {
    ($feature:literal, $module:ident, $db:ty, $conn:ty) => {
        #[cfg(feature = $feature)]
        const _: () = {
            use $crate::error::Error;
            use $crate::job::JobId;
            use $crate::store::{$module, Inserted, NewJob};

            #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
            impl Transaction for sqlx::Transaction<'_, $db> {}
            impl sealed::Sealed for sqlx::Transaction<'_, $db> {
                async fn insert_job(&mut self, job: &NewJob) -> Result<Inserted, Error> {
                    $module::insert(self, job).await
                }

                async fn insert_jobs(&mut self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
                    $module::insert_many(self, jobs).await
                }

                async fn complete_job(&mut self, id: JobId, fence: i64) -> Result<bool, Error> {
                    $module::complete(self, id, fence).await
                }

                async fn insert_workflow(
                    &mut self,
                    name: &str,
                    kind: &'static str,
                ) -> Result<i64, Error> {
                    $module::insert_workflow(self, name, kind).await
                }
            }

            #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
            impl Transaction for $conn {}
            impl sealed::Sealed for $conn {
                async fn insert_job(&mut self, job: &NewJob) -> Result<Inserted, Error> {
                    $module::insert(self, job).await
                }

                async fn insert_jobs(&mut self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
                    $module::insert_many(self, jobs).await
                }

                async fn complete_job(&mut self, id: JobId, fence: i64) -> Result<bool, Error> {
                    $module::complete(self, id, fence).await
                }

                async fn insert_workflow(
                    &mut self,
                    name: &str,
                    kind: &'static str,
                ) -> Result<i64, Error> {
                    $module::insert_workflow(self, name, kind).await
                }
            }
        };
    };
}

transaction_impls!("sqlite", sqlite, sqlx::Sqlite, sqlx::SqliteConnection);
transaction_impls!("postgres", postgres, sqlx::Postgres, sqlx::PgConnection);
