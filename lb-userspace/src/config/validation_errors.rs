//! What validation reports: every problem with the key path of the
//! offending value. Apart from the checks themselves ([`super::validate`]
//! and the sections' own checks), which all write into it.
use std::{fmt, ops::RangeInclusive};

/// One problem: the key path (`listener[1].target_group`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found, in file order within each section; displayed one per
/// line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn range<T: PartialOrd + fmt::Display>(
        &mut self,
        path: impl Into<String>,
        value: T,
        bounds: &RangeInclusive<T>,
    ) -> bool {
        let ok = bounds.contains(&value);
        if !ok {
            let (lo, hi) = (bounds.start(), bounds.end());
            self.push(path, format!("{value} is outside {lo}..={hi}"));
        }
        ok
    }
}

/// Errors gathered elsewhere (tests, callers that merge lists).
impl FromIterator<ValidationError> for ValidationErrors {
    fn from_iter<I: IntoIterator<Item = ValidationError>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
