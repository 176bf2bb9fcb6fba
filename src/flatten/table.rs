//! Row structs that know their Arrow schema: the [`Table`] trait and the `table!` macro.
//!
//! A table is declared once, as a struct whose fields are its columns in order, each with a doc
//! comment. The macro derives the Arrow schema, the column documentation (`docs/tables.md` is
//! generated from it and a test keeps it current) and the conversion of rows to a
//! [`RecordBatch`]. Invariant: the schema of a table depends only on its declaration, never on
//! the data, so every file of a table has the same schema.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The time zone written in the Arrow type of every timestamp column.
///
/// `+00:00` rather than `UTC`: arrow understands it without its `chrono-tz` feature, and Parquet
/// records both the same way (`isAdjustedToUTC = true`), which DuckDB reads as `TIMESTAMPTZ`.
pub const TIME_ZONE: &str = "+00:00";

/// The text of a column: values up to 24 bytes (most names, statuses, UTM values, ids) are
/// kept inline, without an allocation of their own to make and free for every row.
pub type Text = compact_str::CompactString;

/// Microseconds since the Unix epoch, UTC: the value of a timestamp column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

/// A Rust type that can be a column: its Arrow type, nullability and array builder.
pub trait Cell {
    /// Whether the column allows nulls.
    const NULLABLE: bool;
    /// The Arrow type of the column.
    fn data_type() -> DataType;
    /// Builds the column from one value per row (the values can be walked twice, so that text
    /// columns reserve their exact size instead of growing by doubling).
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef
    where
        Self: 'a;
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into()))
}

/// The Arrow type of a list-of-texts column.
pub fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// `Cell` for a text type and its `Option`: a `Utf8` column whose buffer is sized exactly.
macro_rules! text_cells {
    ($($t:ty),+) => {$(
        impl Cell for $t {
            const NULLABLE: bool = false;
            fn data_type() -> DataType {
                DataType::Utf8
            }
            fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
                let bytes = values.clone().map(|v| v.len()).sum();
                let mut b = StringBuilder::with_capacity(values.len(), bytes);
                values.for_each(|v| b.append_value(v));
                Arc::new(b.finish())
            }
        }

        impl Cell for Option<$t> {
            const NULLABLE: bool = true;
            fn data_type() -> DataType {
                DataType::Utf8
            }
            fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
                let bytes = values.clone().flatten().map(|v| v.len()).sum();
                let mut b = StringBuilder::with_capacity(values.len(), bytes);
                values.for_each(|v| b.append_option(v.as_deref()));
                Arc::new(b.finish())
            }
        }
    )+};
}

text_cells!(String, Text, Arc<str>);

impl Cell for Vec<u8> {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Binary
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let bytes = values.clone().map(Vec::len).sum();
        let mut b = BinaryBuilder::with_capacity(values.len(), bytes);
        values.for_each(|v| b.append_value(v));
        Arc::new(b.finish())
    }
}

impl Cell for Option<i64> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Int64
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b = Int64Builder::with_capacity(values.len());
        values.for_each(|v| b.append_option(*v));
        Arc::new(b.finish())
    }
}

impl Cell for i64 {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Int64
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b = Int64Builder::with_capacity(values.len());
        values.for_each(|v| b.append_value(*v));
        Arc::new(b.finish())
    }
}

impl Cell for Option<f64> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Float64
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b = Float64Builder::with_capacity(values.len());
        values.for_each(|v| b.append_option(*v));
        Arc::new(b.finish())
    }
}

impl Cell for bool {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Boolean
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b = BooleanBuilder::with_capacity(values.len());
        values.for_each(|v| b.append_value(*v));
        Arc::new(b.finish())
    }
}

impl Cell for Option<bool> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Boolean
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b = BooleanBuilder::with_capacity(values.len());
        values.for_each(|v| b.append_option(*v));
        Arc::new(b.finish())
    }
}

impl Cell for Micros {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        timestamp_type()
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b =
            TimestampMicrosecondBuilder::with_capacity(values.len()).with_timezone(TIME_ZONE);
        values.for_each(|v| b.append_value(v.0));
        Arc::new(b.finish())
    }
}

impl Cell for Option<Micros> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        timestamp_type()
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b =
            TimestampMicrosecondBuilder::with_capacity(values.len()).with_timezone(TIME_ZONE);
        values.for_each(|v| b.append_option(v.map(|m| m.0)));
        Arc::new(b.finish())
    }
}

/// `Cell` for a list of texts: a `List<Utf8>` column.
impl Cell for Vec<String> {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        list_type()
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b = ListBuilder::with_capacity(StringBuilder::new(), values.len());
        for list in values {
            list.iter().for_each(|s| b.values().append_value(s));
            b.append(true);
        }
        Arc::new(b.finish())
    }
}

impl Cell for Option<Vec<String>> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        list_type()
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut b = ListBuilder::with_capacity(StringBuilder::new(), values.len());
        for list in values {
            if let Some(list) = list {
                list.iter().for_each(|s| b.values().append_value(s));
            }
            b.append(list.is_some());
        }
        Arc::new(b.finish())
    }
}

/// Documentation of one column, as generated into `docs/tables.md`.
#[derive(Debug, Clone)]
pub struct ColumnDoc {
    pub name: &'static str,
    pub data_type: DataType,
    pub nullable: bool,
    pub doc: String,
}

/// A table of the lake: its directory name, schema, documentation and row conversion.
pub trait Table: Sized + Send + 'static {
    /// Directory name of the table under the data directory.
    const NAME: &'static str;
    /// What one row of the table is.
    fn description() -> &'static str;
    /// The columns in order, with their documentation.
    fn columns() -> Vec<ColumnDoc>;
    /// The event time of the row, which picks its `date=` partition.
    fn event_time(&self) -> Micros;
    /// Sorts rows (by reference: rows are large, pointers are cheap to move) the way files of
    /// this table are sorted.
    fn sort(rows: &mut [&Self]);
    /// The columns rows are sorted by, in order (nulls first, ascending).
    fn sort_columns() -> &'static [&'static str];
    /// The columns that tell one row from another: `event_id`, then the sort columns after it
    /// (`position`, `attribute`) in tables with several rows per event. Two rows with the same
    /// key are the same row written twice (a redelivery or a rewritten flush), never two facts.
    fn key_columns() -> &'static [&'static str] {
        let sort = Self::sort_columns();
        let from = sort.iter().position(|c| *c == "event_id").unwrap_or(0);
        &sort[from..]
    }
    /// Converts rows, in the order given, to a batch of [`Table::schema`].
    fn refs_to_batch(rows: &[&Self]) -> RecordBatch;

    /// Converts rows to a batch of [`Table::schema`].
    fn to_batch(rows: &[Self]) -> RecordBatch {
        Self::refs_to_batch(&rows.iter().collect::<Vec<_>>())
    }

    /// The Arrow schema, derived from [`Table::columns`].
    fn schema() -> SchemaRef {
        let fields: Vec<Field> = Self::columns()
            .into_iter()
            .map(|c| Field::new(c.name, c.data_type, c.nullable))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// A value's place in its type's order, compressed to a `u128` that never contradicts it:
/// `a < b` implies `a.sort_prefix() <= b.sort_prefix()`. Where the prefix is the whole value
/// ([`SortPrefix::EXACT`]), equal prefixes mean equal values; otherwise the values decide
/// between equal prefixes. [`Table::sort`] compares these first.
pub trait SortPrefix {
    /// Whether equal prefixes mean equal values.
    const EXACT: bool;
    fn sort_prefix(&self) -> u128;
}

/// Whether `v`'s prefix is the whole value (for the `table!` macro, which knows a sort column
/// by name only).
pub fn prefix_is_exact<T: SortPrefix>(_: &T) -> bool {
    T::EXACT
}

/// An `i64` moved to the unsigned range with its order kept.
fn ordered_i64(v: i64) -> u128 {
    u128::from((v as u64) ^ (1 << 63))
}

impl SortPrefix for i64 {
    const EXACT: bool = true;
    fn sort_prefix(&self) -> u128 {
        ordered_i64(*self)
    }
}

impl SortPrefix for Micros {
    const EXACT: bool = true;
    fn sort_prefix(&self) -> u128 {
        ordered_i64(self.0)
    }
}

/// `None` sorts first, as in `Option`'s order.
impl SortPrefix for Option<i64> {
    const EXACT: bool = true;
    fn sort_prefix(&self) -> u128 {
        self.map_or(0, |v| ordered_i64(v) + 1)
    }
}

/// The first 16 bytes, big-endian, zero-padded: byte-wise order, as `str`'s.
impl SortPrefix for Text {
    const EXACT: bool = false;
    fn sort_prefix(&self) -> u128 {
        let mut first = [0u8; 16];
        let n = self.len().min(16);
        first[..n].copy_from_slice(&self.as_bytes()[..n]);
        u128::from_be_bytes(first)
    }
}

/// `None` takes 0, which no text goes below.
impl SortPrefix for Option<Text> {
    const EXACT: bool = false;
    fn sort_prefix(&self) -> u128 {
        self.as_ref().map_or(0, SortPrefix::sort_prefix)
    }
}

/// Declares a table: `table! { /// what a row is \n Name, "dir", sort = [a, b], { /// doc \n col: Type, ... } }`.
macro_rules! table {
    (
        $(#[doc = $tdoc:literal])*
        $name:ident, $dir:literal, sort = [$k1:ident, $k2:ident $(, $key:ident)*], {
            $( $(#[doc = $doc:literal])+ $field:ident : $ty:ty ),+ $(,)?
        }
    ) => {
        $(#[doc = $tdoc])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl $crate::flatten::table::Table for $name {
            const NAME: &'static str = $dir;

            fn description() -> &'static str {
                concat!($($tdoc),*).trim()
            }

            fn columns() -> Vec<$crate::flatten::table::ColumnDoc> {
                use $crate::flatten::table::Cell;
                vec![$($crate::flatten::table::ColumnDoc {
                    name: stringify!($field),
                    data_type: <$ty as Cell>::data_type(),
                    nullable: <$ty as Cell>::NULLABLE,
                    doc: concat!($($doc),+).split_whitespace().collect::<Vec<_>>().join(" "),
                }),+]
            }

            fn event_time(&self) -> $crate::flatten::table::Micros {
                self.event_time
            }

            fn sort_columns() -> &'static [&'static str] {
                &[stringify!($k1), stringify!($k2) $(, stringify!($key))*]
            }

            fn sort(rows: &mut [&Self]) {
                use $crate::flatten::table::SortPrefix;
                use std::cmp::Ordering;
                use $crate::flatten::table::prefix_is_exact;
                // The first two keys' prefixes, kept beside each row: most comparisons end
                // there without reading the rows, which are large and scattered.
                let mut keyed: Vec<((u128, u128), &Self)> = rows
                    .iter()
                    .map(|r| ((r.$k1.sort_prefix(), r.$k2.sort_prefix()), *r))
                    .collect();
                keyed.sort_by(|((a1, a2), a), ((b1, b2), b)| {
                    a1.cmp(b1)
                        .then_with(|| {
                            if prefix_is_exact(&a.$k1) {
                                Ordering::Equal
                            } else {
                                a.$k1.cmp(&b.$k1)
                            }
                        })
                        .then_with(|| a2.cmp(b2))
                        .then_with(|| (&a.$k2 $(, &a.$key)*).cmp(&(&b.$k2 $(, &b.$key)*)))
                });
                for (slot, (_, row)) in rows.iter_mut().zip(keyed) {
                    *slot = row;
                }
            }

            fn refs_to_batch(rows: &[&Self]) -> arrow_array::RecordBatch {
                use $crate::flatten::table::Cell;
                let columns: Vec<arrow_array::ArrayRef> =
                    vec![$(<$ty as Cell>::build(rows.iter().map(|r| &r.$field))),+];
                arrow_array::RecordBatch::try_new(<Self as $crate::flatten::table::Table>::schema(), columns)
                    .expect("columns are built from the same declaration as the schema")
            }
        }
    };
}

pub(crate) use table;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::flatten::{AttributeChangeRow, CallEventRow};

    /// Texts that share prefixes of every length around sixteen bytes, with bytes at both ends of
    /// the range and multi-byte characters.
    fn text() -> impl Strategy<Value = Text> {
        "(abcdefgh|abcdefg|abcd|\u{0}|\u{ff}|é|z){0,4}".prop_map(Text::from)
    }

    fn int() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            -3i64..3,
            any::<i64>()
        ]
    }

    fn change() -> impl Strategy<Value = AttributeChangeRow> {
        (proptest::option::of(int()), int(), text(), text()).prop_map(
            |(contact_id, time, event_id, attribute)| AttributeChangeRow {
                contact_id,
                event_time: Micros(time),
                event_id,
                attribute,
                ..Default::default()
            },
        )
    }

    fn call() -> impl Strategy<Value = CallEventRow> {
        (proptest::option::of(text()), int(), text()).prop_map(|(call_id, time, event_id)| {
            CallEventRow {
                call_id,
                event_time: Micros(time),
                event_id,
                ..Default::default()
            }
        })
    }

    /// The order `Table::sort` must give: the sort columns compared in turn, and ties kept in
    /// the order given.
    fn by_keys<T, K: Ord>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<usize> {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|a, b| key(&rows[*a]).cmp(&key(&rows[*b])));
        order
    }

    fn sorted<T: Table>(rows: &[T]) -> Vec<usize> {
        let mut refs: Vec<&T> = rows.iter().collect();
        T::sort(&mut refs);
        refs.iter()
            .map(|r| rows.iter().position(|x| std::ptr::eq(x, *r)).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn prefixes_never_contradict_the_order(a in int(), b in int(), s in text(), t in text(), x in proptest::option::of(int()), y in proptest::option::of(int()), u in proptest::option::of(text()), v in proptest::option::of(text())) {
            fn agrees<T: Ord + SortPrefix>(a: &T, b: &T) -> bool {
                (a < b) <= (a.sort_prefix() <= b.sort_prefix())
                    && (b < a) <= (b.sort_prefix() <= a.sort_prefix())
            }
            prop_assert!(agrees(&a, &b));
            prop_assert!(agrees(&Micros(a), &Micros(b)));
            prop_assert!(agrees(&s, &t));
            prop_assert!(agrees(&x, &y));
            prop_assert!(agrees(&u, &v));
        }

        #[test]
        fn rows_sort_as_their_sort_columns_do(changes in proptest::collection::vec(change(), 0..40), calls in proptest::collection::vec(call(), 0..40)) {
            prop_assert_eq!(
                sorted(&changes),
                by_keys(&changes, |r| (r.contact_id, r.event_time, r.event_id.clone(), r.attribute.clone()))
            );
            prop_assert_eq!(
                sorted(&calls),
                by_keys(&calls, |r| (r.call_id.clone(), r.event_time, r.event_id.clone()))
            );
        }
    }
}
