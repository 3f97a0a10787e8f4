//! Aligned columns the way kubectl prints them (Go's `text/tabwriter` with kubectl's
//! settings: minimum cell width 6, padding 3, blanks; the last column is not padded).

/// kubectl's `tabwriterMinWidth`.
const MIN_WIDTH: usize = 6;
/// kubectl's `tabwriterPadding`.
const PADDING: usize = 3;

/// A table: an optional header row and data rows, all with the same number of cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(header: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn push<I, S>(&mut self, row: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline; `indent` is put in
    /// front of every line. Without `headers` the header row is left out (kubectl's
    /// `--no-headers`), and the columns are as wide as the data alone needs.
    pub fn render(&self, headers: bool, indent: &str) -> String {
        let mut lines: Vec<&[String]> = Vec::with_capacity(self.rows.len() + 1);
        if headers && !self.header.is_empty() {
            lines.push(&self.header);
        }
        lines.extend(self.rows.iter().map(Vec::as_slice));
        let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in &lines {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell_width(cell));
            }
        }
        let mut out = String::new();
        for line in &lines {
            out.push_str(indent);
            let mut row = String::new();
            for (i, cell) in line.iter().enumerate() {
                row.push_str(cell);
                if i + 1 < line.len() {
                    let width = (widths[i] + PADDING).max(MIN_WIDTH);
                    row.extend(std::iter::repeat_n(' ', width - cell_width(cell)));
                }
            }
            out.push_str(row.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width of a cell: its characters (control characters are replaced on input).
fn cell_width(cell: &str) -> usize {
    cell.chars().count()
}

/// A cell from a value that came from the cluster: one line, no control characters, and
/// `<none>` (kubectl's word for absent) when empty.
pub fn cell(value: Option<&str>) -> String {
    match value.map(str::trim) {
        None | Some("") => "<none>".to_owned(),
        Some(v) => v.chars().map(|c| if c.is_control() { ' ' } else { c }).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_like_kubectl_and_the_last_is_not() {
        let mut t = Table::new(["NAME", "READY", "AGE"]);
        t.push(["web", "1/1", "10s"]);
        t.push(["platform-agent", "2/2", "3h"]);
        assert_eq!(
            t.render(true, ""),
            "NAME             READY   AGE\nweb              1/1     10s\nplatform-agent   2/2     3h\n"
        );
    }

    #[test]
    fn no_headers_drops_the_header_and_its_width() {
        let mut t = Table::new(["NAMESPACE", "NAME"]);
        t.push(["a", "web"]);
        assert_eq!(t.render(false, ""), "a     web\n");
    }

    #[test]
    fn empty_and_control_values_are_cleaned() {
        assert_eq!(cell(None), "<none>");
        assert_eq!(cell(Some(" ")), "<none>");
        assert_eq!(cell(Some("a\nb")), "a b");
    }
}
