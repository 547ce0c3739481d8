//! Errors found in a TOML file, with the byte span of the offending text, rendered by miette
//! as `file:line:column` with the text underlined and a hint.

use std::ops::Range;
use std::path::PathBuf;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// One problem in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub span: Range<usize>,
    /// What the underline says, when it adds to the message.
    pub label: Option<String>,
    /// Another place that explains this one (e.g. where a field was first mapped).
    pub also: Option<(Range<usize>, String)>,
    pub help: Option<String>,
}

impl Problem {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            span,
            label: None,
            also: None,
            help: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Problem {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }

    pub fn also(mut self, span: Range<usize>, label: impl Into<String>) -> Problem {
        self.also = Some((span, label.into()));
        self
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let main = LabeledSpan::new_primary_with_span(
            self.label.clone(),
            SourceSpan::from(self.span.clone()),
        );
        let also = self
            .also
            .as_ref()
            .map(|(span, label)| LabeledSpan::new_with_span(Some(label.clone()), span.clone()));
        Some(Box::new(std::iter::once(main).chain(also)))
    }
}

/// Everything wrong with one file: rendered as one report with each problem under it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} has {} error{}{}", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, note.as_ref().map_or(String::new(), |n| format!("; {n}")))]
pub struct FileErrors {
    pub path: PathBuf,
    pub source_text: String,
    pub problems: Vec<Problem>,
    /// What the errors held back, said after their count (e.g. checks not run).
    pub note: Option<String>,
}

impl FileErrors {
    /// `file:line:column: message` for each problem, one per line: the form for logs and
    /// tools, beside miette's picture for people.
    pub fn one_line_each(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| {
                let (line, col) = line_col(&self.source_text, p.span.start);
                format!("{}:{line}:{col}: {}", self.path.display(), p.message)
            })
            .chain(
                self.note
                    .as_ref()
                    .map(|n| format!("{}: {n}", self.path.display())),
            )
            .collect()
    }
}

/// Renders each problem of a file as miette draws it (file:line:col, the text underlined,
/// the hint), in file order.
pub fn render(errors: &FileErrors, color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    for problem in &errors.problems {
        let report = WithSource {
            problem,
            source: NamedSource::new(
                errors.path.display().to_string(),
                errors.source_text.clone(),
            ),
        };
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
        out.push('\n');
    }
    out
}

/// A problem paired with its file, so miette can show the lines.
#[derive(Debug)]
struct WithSource<'a> {
    problem: &'a Problem,
    source: NamedSource<String>,
}

impl std::fmt::Display for WithSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.problem.fmt(f)
    }
}

impl std::error::Error for WithSource<'_> {}

impl Diagnostic for WithSource<'_> {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.problem.help()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.problem.labels()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}
