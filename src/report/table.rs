//! Typed table cells: a cell knows its value, its unit and how many digits people see, so the screen, Markdown
//! and text show the study's formatting ("89.40", "2.37x", "0.011/0.019", "-") while CSV and JSON carry plain
//! numbers, and sorting or best-value highlighting never parse a formatted string back.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};

/// What a number measures; the unit of its column. Only [`Unit::Ratio`] shows a suffix ("2.37x").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Percent (0-100), already scaled: accuracy 0.894 is stored as 89.4.
    Percent,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
    /// A ratio such as a speed-up or a compression, shown with an "x".
    Ratio,
    /// Megabytes (10^6 bytes).
    Megabytes,
    /// Watts.
    Watts,
    /// Millijoules.
    Millijoules,
    /// A number without a unit (a load average).
    Number,
}

impl Unit {
    /// The suffix after the number on screen.
    fn suffix(self) -> &'static str {
        if self == Unit::Ratio { "x" } else { "" }
    }

    /// The unit as a header's parenthesis says it: `%`, `ms`, `x`.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Ratio => "x",
            Unit::Megabytes => "MB",
            Unit::Watts => "W",
            Unit::Millijoules => "mJ",
            Unit::Number => "",
        }
    }

    /// The unit for people: "percent", "milliseconds".
    pub fn name(self) -> &'static str {
        match self {
            Unit::Percent => "percent",
            Unit::Millis => "milliseconds",
            Unit::Seconds => "seconds",
            Unit::Ratio => "ratio (times)",
            Unit::Megabytes => "megabytes (10^6 bytes)",
            Unit::Watts => "watts",
            Unit::Millijoules => "millijoules",
            Unit::Number => "a plain number",
        }
    }
}

/// A number in its column's unit, shown with `decimals` digits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantity {
    /// The value, in `unit`.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
    /// Digits after the point on screen.
    pub decimals: u8,
}

impl Quantity {
    fn display(self) -> String {
        format!("{:.*}{}", usize::from(self.decimals), self.value, self.unit.suffix())
    }

    /// The value for CSV and JSON: rounded four digits beyond what the screen shows, so a percent computed as
    /// 0.894 x 100 exports as 89.4, not 89.40000000000001.
    fn plain(self) -> f64 {
        let scale = 10f64.powi(i32::from(self.decimals) + 4);
        let rounded = (self.value * scale).round() / scale;
        if rounded.is_finite() { rounded } else { self.value }
    }
}

/// One cell of a report table.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Words: a device, a model label, notes.
    Text(String),
    /// No value (a static variant's early-exit rate, a run without a GPU reading): "-" on screen, empty in
    /// CSV, `null` in JSON.
    Missing,
    /// A number with a unit.
    Quantity(Quantity),
    /// An estimate with a bound (same unit): "≈89.40 (±0.12)" when the bound exceeds half the last shown digit,
    /// else just the value. CSV and JSON carry the value and the bound as two columns.
    Estimate(Quantity, f64),
    /// Two numbers shown as "a/b" (early-exit / final-exit latency); two columns in CSV and JSON.
    Pair(Box<Cell>, Box<Cell>),
}

/// A cell's value for CSV and JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Plain {
    /// A number in the column's unit.
    Number(f64),
    /// Words.
    Text(String),
    /// Nothing.
    Missing,
}

impl Serialize for Plain {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Plain::Number(value) if value.is_finite() => serializer.serialize_f64(*value),
            Plain::Number(_) | Plain::Missing => serializer.serialize_none(),
            Plain::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl Plain {
    /// The CSV field: the number as Rust writes it (shortest exact form), the text, or nothing.
    fn csv_field(&self) -> String {
        match self {
            Plain::Number(value) if value.is_finite() => format!("{value}"),
            Plain::Number(_) | Plain::Missing => String::new(),
            Plain::Text(text) => text.clone(),
        }
    }
}

impl Cell {
    /// A number in `unit` with `decimals` digits on screen.
    pub fn quantity(value: f64, unit: Unit, decimals: u8) -> Self {
        Cell::Quantity(Quantity { value, unit, decimals })
    }

    /// A fraction (0-1) shown as percent with `decimals` digits; `None` is missing.
    pub fn percent(fraction: Option<f64>, decimals: u8) -> Self {
        fraction.map_or(Cell::Missing, |f| Cell::quantity(f * 100.0, Unit::Percent, decimals))
    }

    /// Microseconds shown as milliseconds with three digits; `None` is missing.
    pub fn millis_from_us(us: Option<f64>) -> Self {
        us.map_or(Cell::Missing, |us| Cell::quantity(us / 1000.0, Unit::Millis, 3))
    }

    /// A ratio with two digits ("2.37x"); `None` is missing.
    pub fn ratio(ratio: Option<f64>) -> Self {
        ratio.map_or(Cell::Missing, |r| Cell::quantity(r, Unit::Ratio, 2))
    }

    /// `value` in `unit` (missing when `None`).
    pub fn optional(value: Option<f64>, unit: Unit, decimals: u8) -> Self {
        value.map_or(Cell::Missing, |v| Cell::quantity(v, unit, decimals))
    }

    /// Text.
    pub fn text(text: impl Into<String>) -> Self {
        Cell::Text(text.into())
    }

    /// What people see: exactly the study's formatting.
    pub fn display(&self) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Missing => "-".into(),
            Cell::Quantity(q) => q.display(),
            Cell::Estimate(q, bound) => {
                if *bound > 0.5 * 10f64.powi(-i32::from(q.decimals)) {
                    format!("≈{} (±{:.*})", q.display(), usize::from(q.decimals), bound)
                } else {
                    q.display()
                }
            }
            Cell::Pair(a, b) => format!("{}/{}", a.display(), b.display()),
        }
    }

    /// The values CSV and JSON carry: one, or two for an estimate (value, bound) or a pair.
    pub fn plain(&self) -> Vec<Plain> {
        match self {
            Cell::Text(text) => vec![Plain::Text(text.clone())],
            Cell::Missing => vec![Plain::Missing],
            Cell::Quantity(q) => vec![Plain::Number(q.plain())],
            Cell::Estimate(q, bound) => {
                let bound = Quantity { value: *bound, ..*q };
                vec![Plain::Number(q.plain()), Plain::Number(bound.plain())]
            }
            Cell::Pair(a, b) => a.plain().into_iter().take(1).chain(b.plain().into_iter().take(1)).collect(),
        }
    }

    /// The number a column sorts and ranks by (a pair's first), or `None` for text and missing cells.
    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Quantity(q) | Cell::Estimate(q, _) => Some(q.value).filter(|v| !v.is_nan()),
            Cell::Pair(a, _) => a.number(),
            Cell::Text(_) | Cell::Missing => None,
        }
    }

    /// Orders cells for sorting: numbers by value, then text alphabetically, then missing cells.
    fn order(&self, other: &Cell) -> std::cmp::Ordering {
        let rank = |c: &Cell| match (c.number(), c) {
            (Some(_), _) => 0,
            (None, Cell::Text(_)) => 1,
            _ => 2,
        };
        match (self.number(), other.number(), self, other) {
            (Some(a), Some(b), _, _) => a.total_cmp(&b),
            (None, None, Cell::Text(a), Cell::Text(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// Which way a column's values are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    /// More is better (accuracy, speed-up).
    Higher,
    /// Less is better (latency, size).
    Lower,
}

/// A column: its header as people see it, the headers of its plain values (units in parentheses), which way
/// is better and what it means.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Header on screen, in Markdown and text ("Speed-up").
    pub name: String,
    /// Headers of its plain values in CSV and JSON, one per value its cells carry ("Speed-up (x)"; an
    /// estimate or a pair has two).
    pub plain_names: Vec<String>,
    /// Which way is better, when one is (best values are highlighted on screen).
    pub better: Option<Better>,
    /// The unit of its numbers, if it holds numbers.
    pub unit: Option<Unit>,
    /// What the column means, for a tooltip.
    pub help: String,
}

impl Column {
    /// A text column.
    pub fn text(name: &str, help: &str) -> Self {
        Column { name: name.into(), plain_names: vec![name.into()], better: None, unit: None, help: help.into() }
    }

    /// A numeric column; its plain header is the name with the unit added when the name lacks it.
    pub fn number(name: &str, unit: Unit, better: Option<Better>, help: &str) -> Self {
        let symbol = unit.symbol();
        let plain = if symbol.is_empty() || name.ends_with(&format!("({symbol})")) {
            name.to_string()
        } else {
            format!("{name} ({symbol})")
        };
        Column { name: name.into(), plain_names: vec![plain], better, unit: Some(unit), help: help.into() }
    }

    /// Replaces the plain headers (for columns whose cells carry two values).
    pub fn with_plain_names(mut self, names: &[&str]) -> Self {
        self.plain_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The tooltip: what it is, its unit, which way is better.
    pub fn tooltip(&self) -> String {
        let mut text = self.help.clone();
        if let Some(unit) = self.unit {
            text.push_str(&format!("\nUnit: {}.", unit.name()));
        }
        text.push_str(match self.better {
            Some(Better::Higher) => "\nHigher is better; the best value is highlighted.",
            Some(Better::Lower) => "\nLower is better; the best value is highlighted.",
            None => "\nNeither higher nor lower is better in itself.",
        });
        text
    }
}

/// A table ready to render. JSON holds the plain headers and values (numbers as numbers, `null` for missing).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Short id (`table2`, ...).
    pub id: String,
    /// Title.
    pub title: String,
    /// Columns.
    pub columns: Vec<Column>,
    /// Cells, one per column.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// The index of the column named `name` on screen.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Row indices sorted by `column` (stable; missing cells last either way); all rows in order when the
    /// column does not exist.
    pub fn order(&self, column: usize, ascending: bool) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        if column >= self.columns.len() {
            return order;
        }
        let missing = Cell::Missing;
        let cell = |row: usize| self.rows[row].get(column).unwrap_or(&missing);
        order.sort_by(|&a, &b| {
            let (x, y) = (cell(a), cell(b));
            match (x, y) {
                (Cell::Missing, Cell::Missing) => std::cmp::Ordering::Equal,
                (Cell::Missing, _) => std::cmp::Ordering::Greater,
                (_, Cell::Missing) => std::cmp::Ordering::Less,
                _ if ascending => x.order(y),
                _ => y.order(x),
            }
        });
        order
    }

    /// The table with its rows sorted by `column`: the order the app shows and exports.
    pub fn sorted(&self, column: usize, ascending: bool) -> Table {
        let rows = self.order(column, ascending).into_iter().map(|r| self.rows[r].clone()).collect();
        Table { rows, ..self.clone() }
    }

    /// The best value of each column that has a better direction (`None` elsewhere).
    pub fn best_values(&self) -> Vec<Option<f64>> {
        (0..self.columns.len())
            .map(|column| {
                let better = self.columns[column].better?;
                let values = self.rows.iter().filter_map(|r| r.get(column)).filter_map(Cell::number);
                match better {
                    Better::Higher => values.reduce(f64::max),
                    Better::Lower => values.reduce(f64::min),
                }
            })
            .collect()
    }

    /// Headers of the plain values, in order (CSV header, JSON `columns`).
    pub fn plain_header(&self) -> Vec<String> {
        self.columns.iter().flat_map(|c| c.plain_names.iter().cloned()).collect()
    }

    /// One row's plain values, as many per column as the column has plain headers (missing when a cell has
    /// fewer).
    pub fn plain_row(&self, row: &[Cell]) -> Vec<Plain> {
        let mut values = Vec::new();
        for (index, column) in self.columns.iter().enumerate() {
            let mut plain = row.get(index).map_or_else(Vec::new, Cell::plain);
            plain.resize(column.plain_names.len(), Plain::Missing);
            values.extend(plain);
        }
        values
    }
}

impl Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Rows<'a>(&'a Table);
        impl Serialize for Rows<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.rows.len()))?;
                for row in &self.0.rows {
                    seq.serialize_element(&self.0.plain_row(row))?;
                }
                seq.end()
            }
        }
        let units: Vec<Option<&str>> = self
            .columns
            .iter()
            .flat_map(|c| std::iter::repeat_n(c.unit.map(Unit::symbol), c.plain_names.len()))
            .collect();
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("title", &self.title)?;
        map.serialize_entry("columns", &self.plain_header())?;
        map.serialize_entry("units", &units)?;
        map.serialize_entry("rows", &Rows(self))?;
        map.end()
    }
}

/// One CSV line, quoting fields that need it.
pub fn csv_line(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| if f.contains([',', '"', '\n']) { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() })
        .collect::<Vec<_>>()
        .join(",")
}

/// A table as CSV: plain numbers (no "x" or "%"), units in the header, empty fields for missing values.
pub fn to_csv(table: &Table) -> String {
    let mut out = csv_line(&table.plain_header()) + "\n";
    for row in &table.rows {
        let fields: Vec<String> = table.plain_row(row).iter().map(Plain::csv_field).collect();
        out += &(csv_line(&fields) + "\n");
    }
    out
}

/// A table as Markdown, as people see it.
pub fn to_markdown(table: &Table) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let mut out = format!(
        "### {}\n\n| {} |\n|{}|\n",
        table.title,
        table.columns.iter().map(|c| escape(&c.name)).collect::<Vec<_>>().join(" | "),
        vec!["---"; table.columns.len()].join("|")
    );
    for row in &table.rows {
        out += &format!("| {} |\n", row.iter().map(|c| escape(&c.display())).collect::<Vec<_>>().join(" | "));
    }
    out
}

/// A table as aligned text, as people see it.
pub fn to_text(table: &Table) -> String {
    let header: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let rows: Vec<Vec<String>> = table.rows.iter().map(|r| r.iter().map(Cell::display).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    let mut out = format!("{}\n{}\n", table.title, line(&header));
    out += &(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ") + "\n");
    for row in &rows {
        out += &(line(row) + "\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table {
            id: "t".into(),
            title: "T".into(),
            columns: vec![
                Column::text("Model", "the variant"),
                Column::number("Accuracy (%)", Unit::Percent, Some(Better::Higher), "top-1"),
                Column::number("Speed-up", Unit::Ratio, Some(Better::Higher), "base / this"),
                Column::number("Prob. loyalty (%)", Unit::Percent, Some(Better::Higher), "loyalty")
                    .with_plain_names(&["Prob. loyalty (%)", "Prob. loyalty bound (%)"]),
                Column::number("Early / final (ms)", Unit::Millis, None, "pair")
                    .with_plain_names(&["Early-exit avg (ms)", "Final-exit avg (ms)"]),
            ],
            rows: vec![
                vec![
                    Cell::text("m/base"),
                    Cell::percent(Some(0.894), 2),
                    Cell::ratio(Some(1.0)),
                    Cell::Estimate(Quantity { value: 99.5, unit: Unit::Percent, decimals: 2 }, 0.0),
                    Cell::Missing,
                ],
                vec![
                    Cell::text("m/ee, \"fast\""),
                    Cell::percent(Some(0.9), 2),
                    Cell::ratio(Some(2.371)),
                    Cell::Estimate(Quantity { value: 97.25, unit: Unit::Percent, decimals: 2 }, 0.125),
                    Cell::Pair(Box::new(Cell::millis_from_us(Some(11.0))), Box::new(Cell::millis_from_us(Some(19.0)))),
                ],
                vec![
                    Cell::text("m/dq"),
                    Cell::Missing,
                    Cell::ratio(Some(1.5)),
                    Cell::Estimate(Quantity { value: 98.0, unit: Unit::Percent, decimals: 2 }, 0.0),
                    Cell::Missing,
                ],
            ],
        }
    }

    #[test]
    fn cells_show_the_studys_formatting() {
        let table = sample();
        let shown: Vec<String> = table.rows[1].iter().map(Cell::display).collect();
        assert_eq!(shown, ["m/ee, \"fast\"", "90.00", "2.37x", "≈97.25 (±0.12)", "0.011/0.019"]);
        assert_eq!(table.rows[0][3].display(), "99.50", "a bound below half a digit is not shown");
        assert_eq!(table.rows[0][4].display(), "-");
        assert!(to_text(&table).contains("0.011/0.019"));
        assert!(to_markdown(&table).contains("| m/base | 89.40 | 1.00x | 99.50 | - |"));
    }

    #[test]
    fn csv_has_plain_numbers_and_units_in_the_header() {
        let csv = to_csv(&sample());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "Model,Accuracy (%),Speed-up (x),Prob. loyalty (%),Prob. loyalty bound (%),Early-exit avg (ms),\
             Final-exit avg (ms)"
        );
        assert_eq!(lines[1], "m/base,89.4,1,99.5,0,,");
        assert_eq!(lines[2], "\"m/ee, \"\"fast\"\"\",90,2.371,97.25,0.125,0.011,0.019");
        assert_eq!(lines[3], "m/dq,,1.5,98,0,,");
        assert!(lines[1..].iter().all(|l| !l.contains('%') && !l.contains('≈') && !l.contains('-')), "{csv}");
    }

    #[test]
    fn json_numbers_are_numbers_and_missing_is_null() {
        let json = serde_json::to_value(sample()).expect("serializes");
        assert_eq!(json["columns"][2], "Speed-up (x)");
        assert_eq!(json["units"][2], "x");
        assert_eq!(json["rows"][1][1].as_f64(), Some(90.0));
        assert_eq!(json["rows"][1][2].as_f64(), Some(2.371));
        assert_eq!(json["rows"][1][6].as_f64(), Some(0.019));
        assert!(json["rows"][2][1].is_null());
        assert_eq!(json["rows"][1][0], "m/ee, \"fast\"");
        assert!(json["rows"].as_array().expect("rows").iter().all(|r| r.as_array().is_some_and(|r| r.len() == 7)));
    }

    #[test]
    fn sorting_is_by_value_with_missing_last_either_way() {
        let table = sample();
        let models = |t: &Table| t.rows.iter().map(|r| r[0].display()).collect::<Vec<_>>();
        assert_eq!(models(&table.sorted(1, false)), ["m/ee, \"fast\"", "m/base", "m/dq"]);
        assert_eq!(models(&table.sorted(1, true)), ["m/base", "m/ee, \"fast\"", "m/dq"]);
        assert_eq!(models(&table.sorted(2, true)), ["m/base", "m/dq", "m/ee, \"fast\""]);
        assert_eq!(models(&table.sorted(0, true)), ["m/base", "m/dq", "m/ee, \"fast\""]);
        // 2.37x sorts above 10.0x as a number would not if it were text ("2" > "1").
        let mut wide = table.clone();
        wide.rows[2][2] = Cell::ratio(Some(10.0));
        assert_eq!(models(&wide.sorted(2, false)), ["m/dq", "m/ee, \"fast\"", "m/base"]);
        assert_eq!(table.order(99, true), [0, 1, 2], "an unknown column keeps the order");
        assert_eq!(table.best_values(), [None, Some(90.0), Some(2.371), Some(99.5), None]);
    }

    #[test]
    fn tooltips_name_the_unit_and_direction() {
        let column = Column::number("Avg inf. time (ms)", Unit::Millis, Some(Better::Lower), "mean latency");
        assert_eq!(column.plain_names, ["Avg inf. time (ms)"]);
        let tooltip = column.tooltip();
        assert!(tooltip.contains("milliseconds") && tooltip.contains("Lower is better"), "{tooltip}");
    }
}
