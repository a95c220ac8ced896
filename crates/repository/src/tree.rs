//! Trees (format §9): one directory's entries, stored as a JSON tree blob.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::Id;

/// The kind of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// Regular file.
    #[default]
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device.
    Chardev,
    /// Block device.
    Blockdev,
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Attribute name (raw bytes).
    pub name: Vec<u8>,
    /// Attribute value.
    pub value: Vec<u8>,
}

/// One directory entry. Names and link targets are raw bytes (Unix paths need not be UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Entry name.
    pub name: Vec<u8>,
    /// Kind.
    pub node_type: Option<NodeType>,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime: i64,
    /// Status change time, ns.
    pub ctime: i64,
    /// Access time, ns; 0 when not recorded (backups do not record it).
    pub atime: i64,
    /// Inode number.
    pub inode: u64,
    /// Device of the file system.
    pub device: u64,
    /// Hard link count.
    pub links: u64,
    /// Data blobs (files), resolved when the node was read from a content list blob.
    pub content: Vec<Id>,
    /// The content list blobs `content` is stored in (format §9.1): the one the node names, then
    /// the bases it builds on, to its whole list. Empty when `content` is stored inline.
    /// Whatever changes `content` must clear this, or the node would name another list.
    pub content_lists: Vec<Id>,
    /// The prints blob describing `content` for the next backup (format §9.2): a hint, never
    /// needed to read the file. Whatever changes `content` must clear it.
    pub prints: Option<Id>,
    /// Tree blob (dirs).
    pub subtree: Option<Id>,
    /// Link target (symlinks).
    pub target: Option<Vec<u8>>,
    /// Device number (device nodes).
    pub rdev: u64,
    /// Extended attributes.
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// The kind, `File` when unset.
    pub fn kind(&self) -> NodeType {
        self.node_type.unwrap_or(NodeType::File)
    }

    /// The name, lossily as text.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Serialize, Deserialize)]
struct XattrRepr {
    name: String,
    value_b64: String,
}

#[derive(Serialize, Deserialize, Default)]
struct NodeRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    #[serde(rename = "type")]
    node_type: NodeType,
    mode: u32,
    uid: u32,
    gid: u32,
    #[serde(default)]
    size: u64,
    mtime: i64,
    ctime: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    atime: i64,
    #[serde(default)]
    inode: u64,
    #[serde(default)]
    device: u64,
    #[serde(default)]
    links: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    content: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_list: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prints: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_b64: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    rdev: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<XattrRepr>,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn split_bytes(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(B64.encode(b))),
    }
}

fn join_bytes<E: serde::de::Error>(
    text: Option<String>,
    b64: Option<String>,
) -> Result<Option<Vec<u8>>, E> {
    match (text, b64) {
        (Some(t), _) => Ok(Some(t.into_bytes())),
        (None, Some(b)) => B64.decode(b).map(Some).map_err(E::custom),
        (None, None) => Ok(None),
    }
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (name, name_b64) = split_bytes(&self.name);
        let (target, target_b64) = match &self.target {
            Some(t) => split_bytes(t),
            None => (None, None),
        };
        NodeRepr {
            name,
            name_b64,
            node_type: self.kind(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
            atime: self.atime,
            inode: self.inode,
            device: self.device,
            links: self.links,
            // A list stored apart is named, not repeated (format §9.1).
            content: if self.content_lists.is_empty() { self.content.clone() } else { Vec::new() },
            content_list: self.content_lists.first().copied(),
            prints: self.prints,
            subtree: self.subtree,
            target,
            target_b64,
            rdev: self.rdev,
            xattrs: self
                .xattrs
                .iter()
                .map(|x| XattrRepr {
                    name: String::from_utf8_lossy(&x.name).into_owned(),
                    value_b64: B64.encode(&x.value),
                })
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = NodeRepr::deserialize(d)?;
        let name = join_bytes::<D::Error>(r.name, r.name_b64)?
            .ok_or_else(|| serde::de::Error::custom("node without a name"))?;
        let target = join_bytes::<D::Error>(r.target, r.target_b64)?;
        let mut xattrs = Vec::with_capacity(r.xattrs.len());
        for x in r.xattrs {
            xattrs.push(Xattr {
                name: x.name.into_bytes(),
                value: B64.decode(x.value_b64).map_err(serde::de::Error::custom)?,
            });
        }
        if r.content_list.is_some() && (!r.content.is_empty() || r.node_type != NodeType::File) {
            return Err(serde::de::Error::custom(
                "content_list on a node that is not a file, or beside content",
            ));
        }
        if r.prints.is_some() && r.node_type != NodeType::File {
            return Err(serde::de::Error::custom("prints on a node that is not a file"));
        }
        Ok(Node {
            name,
            node_type: Some(r.node_type),
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            size: r.size,
            mtime: r.mtime,
            ctime: r.ctime,
            atime: r.atime,
            inode: r.inode,
            device: r.device,
            links: r.links,
            content: r.content,
            // Resolved into `content` (and the rest of the chain) by whoever reads the tree.
            content_lists: r.content_list.into_iter().collect(),
            prints: r.prints,
            subtree: r.subtree,
            target,
            rdev: r.rdev,
            xattrs,
        })
    }
}

/// A directory: nodes sorted by raw name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sorts the nodes by name (the stored order).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The stored form (format §9): the nodes sorted by name, as JSON. A tree's blob id is the
    /// keyed hash of these bytes, so every writer must produce them the same way.
    ///
    /// # Errors
    /// A node that does not serialize (not expected of a tree built in memory).
    pub fn encode(mut self) -> crate::error::Result<Vec<u8>> {
        self.sort();
        serde_json::to_vec(&self).map_err(|e| crate::error::Error::Invalid(e.to_string()))
    }

    /// The node with this name.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_round_trip() {
        let mut t = Tree::default();
        t.nodes.push(Node {
            name: vec![0xff, b'a'],
            node_type: Some(NodeType::Symlink),
            target: Some(vec![0xfe]),
            xattrs: vec![Xattr { name: b"user.x".to_vec(), value: vec![0, 1] }],
            ..Default::default()
        });
        t.nodes.push(Node {
            name: b"plain".to_vec(),
            node_type: Some(NodeType::File),
            ..Default::default()
        });
        t.sort();
        let json = serde_json::to_vec(&t).unwrap();
        let back: Tree = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, t);
        assert!(back.find(&[0xff, b'a']).is_some());
    }
}
