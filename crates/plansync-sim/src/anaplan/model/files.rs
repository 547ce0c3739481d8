//! Files of a model (import sources, export outputs, private uploads), held as numbered chunks.

use std::collections::BTreeMap;

pub struct FileData {
    pub id: u64,
    pub name: String,
    /// The chunk count the client set (-1 while unknown), or the final count after `complete`.
    pub chunk_count: i64,
    pub chunks: BTreeMap<u32, Vec<u8>>,
}

impl FileData {
    pub fn new(id: u64, name: String) -> FileData {
        FileData {
            id,
            name,
            chunk_count: 0,
            chunks: BTreeMap::new(),
        }
    }

    pub fn content(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.chunks.values().map(Vec::len).sum());
        for c in self.chunks.values() {
            out.extend_from_slice(c);
        }
        out
    }

    /// Stores `content` as chunks of at most `chunk_size` bytes (export output, dumps).
    pub fn set_content(&mut self, content: &[u8], chunk_size: usize) {
        self.chunks.clear();
        for (i, c) in content.chunks(chunk_size.max(1)).enumerate() {
            self.chunks.insert(i as u32, c.to_vec());
        }
        self.chunk_count = self.chunks.len() as i64;
    }
}
