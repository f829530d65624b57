//! Rich output in the evcxr Jupyter kernel.
//!
//! evcxr shows the value of a cell's last expression by calling its
//! `evcxr_display` method when it has one; the method prints a block
//! `EVCXR_BEGIN_CONTENT <mime type>` … `EVCXR_END_CONTENT` to stdout. Outside
//! Jupyter these types print as plain text.

use std::fmt;

/// Print `content` as a rich output of the given MIME type (for evcxr).
pub fn emit(mime: &str, content: &str) {
    println!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT");
}

/// HTML shown rendered in Jupyter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Html(pub String);

impl Html {
    /// Rich display in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        emit("text/html", &self.0);
    }
}

impl fmt::Display for Html {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An integer with thousands separators, as Python's `f"{n:,}"` prints it
/// (the book's parameter counts).
///
/// ```
/// assert_eq!(llm_core::display::thousands(596049920), "596,049,920");
/// assert_eq!(llm_core::display::thousands(-1234), "-1,234");
/// ```
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::from(if n < 0 { "-" } else { "" });
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Escape text for HTML.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A simple HTML table with a header row; cells are escaped.
pub fn html_table<S: AsRef<str>>(headers: &[&str], rows: &[Vec<S>]) -> String {
    let mut html = String::from("<table>\n<thead><tr>");
    for h in headers {
        html.push_str(&format!(
            "<th style=\"text-align:left\">{}</th>",
            escape_html(h)
        ));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            html.push_str(&format!(
                "<td style=\"text-align:left\"><code>{}</code></td>",
                escape_html(cell.as_ref())
            ));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>");
    html
}

/// A table for notebooks: renders as HTML in Jupyter, as aligned text elsewhere.
///
/// ```
/// use llm_core::display::Table;
/// let t = Table::new(&["model", "params"]).row(["gpt2-small", "124M"]);
/// assert!(t.to_string().contains("gpt2-small"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row (builder style).
    pub fn row<I, S>(mut self, cells: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.push(cells);
        self
    }

    /// Add a row.
    pub fn push<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    /// Rich display in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        let headers: Vec<&str> = self.headers.iter().map(String::as_str).collect();
        emit("text/html", &html_table(&headers, &self.rows));
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ncol = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(ncol) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .take(ncol)
                .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
                .collect();
            writeln!(f, "{}", parts.join("  ").trim_end())
        };
        line(f, &self.headers)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_text_and_html() {
        let _rng = crate::rng_lock();
        let t = Table::new(&["a", "bb"]).row(["1", "<x>"]).row(["333", "4"]);
        assert_eq!(t.to_string(), "a    bb\n1    <x>\n333  4\n");
        let html = html_table(&["a"], &[vec!["<x>"]]);
        assert!(html.contains("&lt;x&gt;"));
    }
}
