//! The environment tag every process of a cell inherits: the cell id and the
//! worker instance id. Setsid escapees and orphans keep it, so a /proc scan
//! finds them wherever they were reparented.

/// Names the cell a process belongs to.
pub const CELL_VAR: &str = "HUM_CELL";
/// Names the worker instance that started the cell.
pub const INSTANCE_VAR: &str = "HUM_WORKER_INSTANCE";

/// `NAME=value` as it appears in `/proc/<pid>/environ`.
pub fn entry(var: &str, value: &str) -> Vec<u8> {
    format!("{var}={value}").into_bytes()
}

/// The tag of one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellTag {
    pub cell_id: String,
    pub instance: String,
}

impl CellTag {
    /// The environ entry that marks this cell's processes.
    pub fn cell_entry(&self) -> Vec<u8> {
        entry(CELL_VAR, &self.cell_id)
    }

    /// The variables to set on the cell's leader.
    pub fn vars(&self) -> [(&'static str, &str); 2] {
        [(CELL_VAR, &self.cell_id), (INSTANCE_VAR, &self.instance)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_is_an_entry_a_scan_reads() {
        // A scan promises only the entries that begin with the prefix.
        for var in [CELL_VAR, INSTANCE_VAR] {
            assert!(
                var.as_bytes().starts_with(crate::os::procs::TAG_PREFIX),
                "{var}"
            );
        }
    }
}
