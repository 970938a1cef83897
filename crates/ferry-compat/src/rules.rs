//! The rule catalogue: stable ids (users write them in `-- ferry:allow`), each with one class,
//! one severity and the safe way to make the change. Ids never change meaning; retire, don't reuse.

use serde::{Serialize, Serializer};

/// Who a finding hurts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// The previous application version stops working against the new schema.
    Breaking,
    /// The statement blocks reads or writes on a live table while it runs.
    Locking,
    /// Rows or values are destroyed.
    DataLoss,
    /// ferry could not parse the statement: it was not analysed.
    Unparsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

macro_rules! rules {
    ($($variant:ident = $id:literal, $class:ident, $hint:literal;)*) => {
        /// A stable rule id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Rule { $($variant),* }

        impl Rule {
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),*];

            /// The id users write in `-- ferry:allow <rule-id> <reason>`.
            pub fn id(self) -> &'static str {
                match self { $(Rule::$variant => $id),* }
            }

            pub fn class(self) -> Class {
                match self { $(Rule::$variant => Class::$class),* }
            }

            /// The safe way to make this kind of change.
            pub fn hint(self) -> &'static str {
                match self { $(Rule::$variant => $hint),* }
            }
        }
    };
}

rules! {
    DropTable = "drop-table", Breaking,
        "expand/contract: stop using the table in a release first, then drop it in a later migration (and back it up)";
    DropColumn = "drop-column", Breaking,
        "expand/contract: release code that no longer reads or writes the column, then drop it in a later migration";
    RenameTable = "rename-table", Breaking,
        "create the new table (or a view with the new name), write to both, backfill, switch the code, drop the old name in a later release";
    RenameColumn = "rename-column", Breaking,
        "add the new column, write to both (or a trigger), backfill, switch reads, drop the old column in a later release";
    DropView = "drop-view", Breaking,
        "stop using the view in a release first, then drop it in a later migration";
    DropFunction = "drop-function", Breaking,
        "stop calling the function in a release first, then drop it in a later migration";
    DropTrigger = "drop-trigger", Breaking,
        "stop relying on what the trigger does in a release first, then drop it in a later migration (or drop and create it again in one transactional migration)";
    DropType = "drop-type", Breaking,
        "stop using the type in a release first, then drop it in a later migration";
    DropSequence = "drop-sequence", Breaking,
        "stop using the sequence in a release first, then drop it in a later migration";
    NarrowingTypeChange = "narrowing-type-change", Breaking,
        "add a column of the new type, write to both, backfill, switch the code, drop the old column later; only widen a type in place";
    AddNotNullColumnWithoutDefault = "add-not-null-column-without-default", Breaking,
        "add the column nullable or with a constant DEFAULT; once every writer sets it and it is backfilled, add NOT NULL in a later release";
    SetNotNull = "set-not-null", Breaking,
        "first release code that always writes the column and backfill it; on PostgreSQL add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL";
    DropDefault = "drop-default", Breaking,
        "old inserts that omit the column rely on the default: keep it until the previous version is gone (MySQL: repeat DEFAULT in MODIFY/CHANGE)";
    AddUniqueConstraint = "add-unique-constraint", Breaking,
        "deduplicate and release code that never writes duplicates first; on PostgreSQL build CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … UNIQUE USING INDEX";
    AddCheckConstraint = "add-check-constraint", Breaking,
        "release code that only writes valid rows first; on PostgreSQL ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT in a later migration";
    AddForeignKey = "add-foreign-key", Breaking,
        "release code that only writes existing references first; on PostgreSQL ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT in a later migration";
    AddPrimaryKey = "add-primary-key", Breaking,
        "deduplicate and fill the key columns first; on PostgreSQL build a unique index CONCURRENTLY and ADD PRIMARY KEY USING INDEX";
    UniqueIndex = "unique-index", Breaking,
        "deduplicate and release code that never writes duplicates first, then build the unique index (CONCURRENTLY on PostgreSQL)";
    DropEnumValue = "drop-enum-value", Breaking,
        "stop writing the value and migrate rows away from it in a release first; remove it in a later migration";
    RenameEnumValue = "rename-enum-value", Breaking,
        "add the new value, write it, migrate rows, remove the old value in a later release";
    NonConcurrentIndex = "non-concurrent-index", Locking,
        "CREATE INDEX CONCURRENTLY (in a `-- ferry:no-transaction` migration) builds the index without blocking writes";
    TableRewritingTypeChange = "table-rewriting-type-change", Locking,
        "the table is rewritten under an ACCESS EXCLUSIVE lock: add a new column, backfill in batches, switch, drop the old one";
    ConstraintWithoutNotValid = "constraint-without-not-valid", Locking,
        "ADD CONSTRAINT … NOT VALID takes a short lock; VALIDATE CONSTRAINT in a later migration checks existing rows without blocking writes";
    VolatileDefault = "add-column-volatile-default", Locking,
        "a volatile default rewrites the table: add the column without a default (or a constant one), then backfill in batches";
    MysqlLockingAlter = "mysql-locking-alter", Locking,
        "add ALGORITHM=INPLACE, LOCK=NONE (or ALGORITHM=INSTANT) so MySQL/MariaDB refuses instead of copying the table under a lock, or use an online schema change tool (gh-ost, pt-online-schema-change)";
    Truncate = "truncate", DataLoss,
        "make sure the rows are not needed (take a backup: `ferry backup create`); the down script cannot bring them back";
    DeleteWithoutWhere = "delete-without-where", DataLoss,
        "add a WHERE clause, or take a backup first; the down script cannot bring the rows back";
    UpdateWithoutWhere = "update-without-where", DataLoss,
        "add a WHERE clause, or keep the old values (a new column, a backup) so the down script can restore them";
    ShadowApplyFailed = "shadow-apply-failed", Breaking,
        "the up script failed on a real database: fix it before anything else";
    ShadowObjectRemoved = "shadow-object-removed", Breaking,
        "the shadow database shows an object the previous version relies on is gone: keep it until the previous version is retired (expand/contract)";
    ShadowObjectChanged = "shadow-object-changed", Breaking,
        "the shadow database shows a column the previous version relies on narrowed, became NOT NULL or lost its default: add a new column instead, switch, then drop the old one later";
    OldQueryFails = "old-query-fails", Breaking,
        "expand/contract: keep the old column, table or function until the previous version is retired (or add a compatibility view with the old shape), and remove it in a later release";
    OldQueryColumnsChanged = "old-query-columns-changed", Breaking,
        "the previous version decodes these result columns by name: keep them (or a compatibility view that still returns them) until the previous version is retired";
    OldQueryInvalidAtBase = "old-query-invalid-at-base", Unparsed,
        "the query does not prepare on the schema the previous version runs on, so it was not checked: fix the query file (regenerate `.sqlx/` with `cargo sqlx prepare` on the previous version) or --from";
    RecreatedNotCompared = "recreated-not-compared", Unparsed,
        "ferry could not tell what the object offered before or offers now; the shadow database `ferry compat check` creates compares the end state itself (its findings say what was lost), otherwise compare the columns or signature before and after by hand";
    Unparsed = "unparsed", Unparsed,
        "ferry could not parse this statement, so it was not analysed; review it by hand";
}

impl Rule {
    pub fn severity(self) -> Severity {
        match self.class() {
            Class::Breaking => Severity::Error,
            Class::Locking | Class::DataLoss => Severity::Warning,
            Class::Unparsed => Severity::Info,
        }
    }

    /// Looks a rule up by its id.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}
