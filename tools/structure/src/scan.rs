//! Reads one file's tokens for what the structure check needs, without parsing Rust.
//!
//! The scanner walks the tokens once, keeping a stack of the braces it is inside (a
//! module, an `impl` or `trait` block, a function body, or any other block) and
//! whether it stands where an item may start (after `;`, `{`, `}` or an attribute,
//! through `pub(…)`, `unsafe`, `async`, `const` and `extern "C"`). There it recognises:
//!
//! - `mod x;` (with its `#[path]`) and inline `mod x { … }`, which become modules;
//! - `use` trees, flattened into leaves: nested braces, `self`, globs and renames, each
//!   leaf with the name it binds;
//! - item names (`fn`, `struct`, `enum`, `trait`, `type`, `const`, `static`, …), which
//!   resolve names brought in by glob imports;
//! - functions with bodies, their qualified name (`Store::open`, `<Batch as Encode>::encode`)
//!   and the lines from `fn` to the closing brace.
//!
//! Anywhere else, a name followed by `::` starts a path (`crate::b::f()`,
//! `super::x::Y`, `$crate::m`, `store::Store::open`), which the resolver later maps to
//! a module. `#[cfg(test)]` and `#[test]` mark the item they are on (and everything in
//! it) as test code; `#![cfg(test)]` marks the whole module.

use crate::lexer::{Kind, Token};

/// What one file holds.
#[derive(Debug, Default)]
pub struct FileScan {
    /// Lines inside inline `#[cfg(test)] mod … { … }` blocks, attributes included.
    pub test_module_lines: u32,
    /// The modules of the file: `[0]` is the file's own module, then inline modules.
    pub modules: Vec<LocalModule>,
    /// Functions with bodies, in order of their `fn`.
    pub fns: Vec<FnSpan>,
}

/// A module whose tokens are in this file: the file's own, or an inline `mod x { … }`.
#[derive(Debug, Default)]
pub struct LocalModule {
    /// Its index in [`FileScan::modules`] of the module it is declared in.
    pub parent: Option<usize>,
    /// Its name (empty for the file's own module).
    pub name: String,
    /// Whether it is test code (`#[cfg(test)]` on it or an enclosing item, or
    /// `#![cfg(test)]` inside it).
    pub test: bool,
    /// Out-of-line modules it declares, `mod x;`.
    pub decls: Vec<ModDecl>,
    /// Leaves of the `use` trees in it.
    pub uses: Vec<UseLeaf>,
    /// Paths of two segments or more written in it outside `use` lines.
    pub paths: Vec<PathRef>,
    /// Names of items it defines.
    pub items: Vec<String>,
}

/// `mod name;`, with the file a `#[path]` attribute names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModDecl {
    /// The module's name.
    pub name: String,
    /// The value of `#[path = "…"]`, if any.
    pub path: Option<String>,
    /// Whether the declaration is test code (`#[cfg(test)] mod tests;`).
    pub test: bool,
    /// The line of `mod`.
    pub line: u32,
}

/// What a `use` leaf brings into scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseBinding {
    /// One name (`use a::b;` binds `b`, `use a::b as c;` binds `c`, `use a::{self}` binds `a`).
    Name(String),
    /// Everything public in the module (`use a::*;`).
    Glob,
}

/// One leaf of a `use` tree, such as `crate::a::b` of `use crate::a::{b, c};`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseLeaf {
    /// The full path, without a trailing `self` or `*`.
    pub path: Vec<String>,
    /// What it binds.
    pub binding: UseBinding,
    /// The line of the leaf's last segment.
    pub line: u32,
    /// Whether it is test code.
    pub test: bool,
}

/// A path written in code, such as `crate::b::f` of `crate::b::f()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRef {
    /// The segments as written (`$crate` is read as `crate`).
    pub segments: Vec<String>,
    /// The line of its first segment.
    pub line: u32,
    /// Whether it is test code.
    pub test: bool,
}

/// A function with a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnSpan {
    /// Its name, qualified by the inline modules, `impl` or `trait` blocks and
    /// functions around it in the file: `Store::open`, `wire::<Batch as Encode>::encode`.
    pub name: String,
    /// The line of `fn`.
    pub start: u32,
    /// The line of the closing brace.
    pub end: u32,
    /// Whether it is test code.
    pub test: bool,
}

impl FnSpan {
    /// Lines from `fn` to the closing brace, both included.
    pub fn lines(&self) -> u32 {
        self.end.saturating_sub(self.start) + 1
    }
}

/// Scans one file's tokens.
pub fn scan(tokens: &[Token<'_>]) -> FileScan {
    let mut scanner = Scanner {
        tokens,
        i: 0,
        out: FileScan {
            modules: vec![LocalModule::default()],
            ..FileScan::default()
        },
        frames: vec![Frame {
            kind: FrameKind::Module(0),
            test: false,
            test_module_start: None,
            fn_index: None,
        }],
        paren: 0,
        item_start: true,
        attrs: Attrs::default(),
        pending: None,
        stmt_test: None,
    };
    scanner.run();
    scanner.out
}

#[derive(Debug)]
enum FrameKind {
    Module(usize),
    Impl(String),
    Trait(String),
    Fn(String),
    Other,
}

#[derive(Debug)]
struct Frame {
    kind: FrameKind,
    test: bool,
    /// For the outermost inline test module: the line its attributes start on.
    test_module_start: Option<u32>,
    fn_index: Option<usize>,
}

/// Outer attributes read since the last item started.
#[derive(Debug, Default)]
struct Attrs {
    test: bool,
    path: Option<String>,
    first_line: Option<u32>,
}

/// An item whose body, if it has one, is the next `{` at the same depth.
#[derive(Debug)]
struct Pending {
    kind: PendingKind,
    depth: usize,
    paren: u32,
    test: bool,
    line: u32,
    attr_line: u32,
    path: Option<String>,
}

#[derive(Debug)]
enum PendingKind {
    Mod(String),
    Fn(String),
    Impl(String),
    Trait(String),
}

struct Scanner<'t, 'a> {
    tokens: &'t [Token<'a>],
    i: usize,
    out: FileScan,
    frames: Vec<Frame>,
    /// Depth of `(` and `[`.
    paren: u32,
    item_start: bool,
    attrs: Attrs,
    pending: Option<Pending>,
    /// Set while inside an item marked test that has no frame of its own yet (a
    /// `#[cfg(test)] use …;` or `const`): the brace depth it started at.
    stmt_test: Option<usize>,
}

/// Words that may stand between an item's start and its keyword.
const QUALIFIERS: &[&str] = &[
    "unsafe", "async", "const", "default", "auto", "safe", "extern",
];

/// Keywords that introduce an item whose name the glob resolution may need.
const NAMED_ITEMS: &[&str] = &[
    "struct", "enum", "union", "type", "static", "const", "trait", "fn",
];

impl<'a> Scanner<'_, 'a> {
    fn at(&self, offset: usize) -> Option<Token<'a>> {
        self.tokens.get(self.i + offset).copied()
    }

    fn current_test(&self) -> bool {
        self.frames.last().is_some_and(|f| f.test) || self.stmt_test.is_some()
    }

    fn current_module(&self) -> usize {
        self.frames
            .iter()
            .rev()
            .find_map(|f| match f.kind {
                FrameKind::Module(index) => Some(index),
                _ => None,
            })
            .unwrap_or(0)
    }

    fn in_module_scope(&self) -> bool {
        matches!(
            self.frames.last().map(|f| &f.kind),
            Some(FrameKind::Module(_))
        )
    }

    fn module_mut(&mut self) -> &mut LocalModule {
        let index = self.current_module();
        &mut self.out.modules[index]
    }

    fn run(&mut self) {
        while let Some(token) = self.at(0) {
            self.step(token);
        }
    }

    fn step(&mut self, token: Token<'a>) {
        if token.kind == Kind::Punct {
            return self.punct(token);
        }
        if token.kind == Kind::Ident && self.item_start && self.item_keyword(token) {
            return;
        }
        if token.is_name() && self.at(1).is_some_and(|t| t.is_punct("::")) && self.starts_path() {
            return self.path(token);
        }
        self.item_start = false;
        self.i += 1;
    }

    fn punct(&mut self, token: Token<'a>) {
        match token.text {
            "#" => return self.attribute(),
            "{" => self.open_brace(token.line),
            "}" => self.close_brace(token.line),
            "(" | "[" => {
                self.paren += 1;
                self.item_start = false;
            }
            ")" | "]" => self.paren = self.paren.saturating_sub(1),
            ";" => self.semicolon(),
            "," => {
                self.attrs = Attrs::default();
                self.item_start = false;
            }
            _ => self.item_start = false,
        }
        self.i += 1;
    }

    /// Whether the name at `self.i` starts a path: not after `::` (the middle of one),
    /// and not after `.` (a method's turbofish).
    fn starts_path(&self) -> bool {
        let previous = self.i.checked_sub(1).and_then(|p| self.tokens.get(p));
        !previous.is_some_and(|t| t.is_punct("::") || t.is_punct("."))
    }

    fn path(&mut self, first: Token<'a>) {
        let mut segments = vec![first.text.to_owned()];
        self.i += 1;
        while self.at(0).is_some_and(|t| t.is_punct("::"))
            && self.at(1).is_some_and(|t| t.is_name())
        {
            segments.push(self.tokens[self.i + 1].text.to_owned());
            self.i += 2;
        }
        let test = self.current_test();
        self.module_mut().paths.push(PathRef {
            segments,
            line: first.line,
            test,
        });
        self.item_start = false;
    }

    /// Handles a keyword where an item may start; false if `token` is none of them.
    fn item_keyword(&mut self, token: Token<'a>) -> bool {
        let next = self.at(1);
        let next_name = next.filter(Token::is_name).map(|t| t.text.to_owned());
        if next.is_some_and(|t| t.is_punct("::")) && token.text != "use" {
            return false;
        }
        match token.text {
            "pub" => {
                self.i += 1;
                if next.is_some_and(|t| t.is_punct("(")) {
                    self.skip_group();
                }
                return true;
            }
            "use" => {
                self.use_item();
                return true;
            }
            "extern" if next.is_some_and(|t| t.kind == Kind::Str) => {
                self.i += 2;
                return true;
            }
            "extern" if next.is_some_and(|t| t.is_ident("crate")) => {
                self.skip_to_semicolon();
                return true;
            }
            "const"
                if next.is_some_and(|t| {
                    t.is_ident("fn") || t.is_ident("unsafe") || t.is_ident("async")
                }) =>
            {
                self.i += 1;
                return true;
            }
            word if QUALIFIERS.contains(&word) && word != "const" => {
                self.i += 1;
                return true;
            }
            "mod" | "fn" | "trait" if next_name.is_some() => {
                let name = next_name.unwrap_or_default();
                let kind = match token.text {
                    "mod" => PendingKind::Mod(name.clone()),
                    "fn" => PendingKind::Fn(name.clone()),
                    _ => PendingKind::Trait(name.clone()),
                };
                if token.text != "mod" {
                    self.record_item(&name);
                }
                self.start_pending(kind, token.line);
                self.i += 2;
            }
            "impl" => {
                let name = self.impl_name();
                self.start_pending(PendingKind::Impl(name), token.line);
                self.i += 1;
            }
            "macro_rules" if next.is_some_and(|t| t.is_punct("!")) => {
                if let Some(name) = self.at(2).filter(|t| t.is_name()) {
                    let name = name.text.to_owned();
                    self.record_item(&name);
                }
                self.i += 2;
            }
            word if NAMED_ITEMS.contains(&word) => {
                let name = match next {
                    Some(t) if t.is_ident("mut") => self.at(2).map(|t| t.text.to_owned()),
                    _ => next_name,
                };
                if let Some(name) = name {
                    self.record_item(&name);
                }
                self.mark_item_test();
                self.i += 1;
            }
            _ => return false,
        }
        self.item_start = false;
        true
    }

    fn record_item(&mut self, name: &str) {
        if self.in_module_scope() && name != "_" {
            self.module_mut().items.push(name.to_owned());
        }
    }

    /// An item without a frame of its own (`struct`, `const`, …) carries its test
    /// attribute until it ends.
    fn mark_item_test(&mut self) {
        if std::mem::take(&mut self.attrs).test && self.stmt_test.is_none() {
            self.stmt_test = Some(self.frames.len());
        }
    }

    fn start_pending(&mut self, kind: PendingKind, line: u32) {
        let attrs = std::mem::take(&mut self.attrs);
        self.pending = Some(Pending {
            kind,
            depth: self.frames.len(),
            paren: self.paren,
            test: attrs.test,
            line,
            attr_line: attrs.first_line.unwrap_or(line),
            path: attrs.path,
        });
    }

    /// The name an `impl` block's functions are qualified with: `Type`, or
    /// `<Type as Trait>` for a trait implementation.
    fn impl_name(&self) -> String {
        let mut header = Vec::new();
        let (mut angle, mut group) = (0u32, 0u32);
        for token in &self.tokens[self.i + 1..] {
            match token.text {
                "<" if token.kind == Kind::Punct => angle += 1,
                ">" if token.kind == Kind::Punct => angle = angle.saturating_sub(1),
                "(" | "[" if token.kind == Kind::Punct => group += 1,
                ")" | "]" if token.kind == Kind::Punct => group = group.saturating_sub(1),
                "{" | ";" if token.kind == Kind::Punct && group == 0 => break,
                "where" if token.kind == Kind::Ident && angle == 0 && group == 0 => break,
                _ => {}
            }
            header.push((token, angle, group));
        }
        // Generic parameters right after `impl` are not part of the name.
        let skip = if header.first().is_some_and(|(t, _, _)| t.is_punct("<")) {
            header
                .iter()
                .position(|&(_, angle, _)| angle == 0)
                .unwrap_or(header.len())
        } else {
            0
        };
        let header = &header[skip..];
        let last_name = |part: &[(&Token<'_>, u32, u32)]| {
            part.iter()
                .rev()
                .find(|(t, angle, group)| {
                    *angle == 0 && *group == 0 && t.is_name() && !t.is_ident("dyn")
                })
                .map_or_else(|| "_".to_owned(), |(t, _, _)| t.text.to_owned())
        };
        match header
            .iter()
            .position(|(t, angle, group)| t.is_ident("for") && *angle == 0 && *group == 0)
        {
            Some(split) => format!(
                "<{} as {}>",
                last_name(&header[split + 1..]),
                last_name(&header[..split])
            ),
            None => last_name(header),
        }
    }

    fn qualified_fn_name(&self, name: &str) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for frame in &self.frames[1..] {
            match &frame.kind {
                FrameKind::Module(index) => parts.push(&self.out.modules[*index].name),
                FrameKind::Impl(n) | FrameKind::Trait(n) | FrameKind::Fn(n) => parts.push(n),
                FrameKind::Other => {}
            }
        }
        parts.push(name);
        parts.join("::")
    }

    fn open_brace(&mut self, line: u32) {
        let parent_test = self.current_test();
        let depth = self.frames.len();
        let pending = self
            .pending
            .take_if(|p| p.depth == depth && p.paren == self.paren);
        let mut frame = Frame {
            kind: FrameKind::Other,
            test: parent_test,
            test_module_start: None,
            fn_index: None,
        };
        if let Some(pending) = pending {
            frame.test = parent_test || pending.test;
            frame.kind = match pending.kind {
                PendingKind::Mod(name) => {
                    if pending.test && !parent_test {
                        frame.test_module_start = Some(pending.attr_line);
                    }
                    let parent = Some(self.current_module());
                    self.out.modules.push(LocalModule {
                        parent,
                        name,
                        test: frame.test,
                        ..LocalModule::default()
                    });
                    FrameKind::Module(self.out.modules.len() - 1)
                }
                PendingKind::Fn(name) => {
                    let qualified = self.qualified_fn_name(&name);
                    self.out.fns.push(FnSpan {
                        name: qualified,
                        start: pending.line,
                        end: line,
                        test: frame.test,
                    });
                    frame.fn_index = Some(self.out.fns.len() - 1);
                    FrameKind::Fn(name)
                }
                PendingKind::Impl(name) => FrameKind::Impl(name),
                PendingKind::Trait(name) => FrameKind::Trait(name),
            };
        }
        self.frames.push(frame);
        self.attrs = Attrs::default();
        self.item_start = true;
    }

    fn close_brace(&mut self, line: u32) {
        // The file's own frame is never closed, whatever stray braces a macro holds.
        if self.frames.len() > 1
            && let Some(frame) = self.frames.pop()
        {
            if let Some(index) = frame.fn_index {
                self.out.fns[index].end = line;
            }
            if let Some(start) = frame.test_module_start {
                self.out.test_module_lines += line.saturating_sub(start) + 1;
            }
        }
        if self
            .stmt_test
            .is_some_and(|depth| depth >= self.frames.len())
        {
            self.stmt_test = None;
        }
        self.attrs = Attrs::default();
        self.item_start = true;
    }

    fn semicolon(&mut self) {
        let depth = self.frames.len();
        // A pending item that ends here has no body: `mod x;` is a module file to
        // read, `fn f();` a declaration.
        if let Some(pending) = self
            .pending
            .take_if(|p| p.depth == depth && p.paren == self.paren)
            && let PendingKind::Mod(name) = pending.kind
        {
            let test = pending.test || self.current_test();
            let decl = ModDecl {
                name,
                path: pending.path,
                test,
                line: pending.line,
            };
            self.module_mut().decls.push(decl);
        }
        if self.stmt_test.is_some_and(|d| d >= depth) {
            self.stmt_test = None;
        }
        self.attrs = Attrs::default();
        self.item_start = true;
    }

    /// Skips a balanced `(…)` or `[…]` group starting at `self.i`.
    fn skip_group(&mut self) {
        let mut depth = 0u32;
        while let Some(token) = self.at(0) {
            self.i += 1;
            if token.is_punct("(") || token.is_punct("[") {
                depth += 1;
            } else if token.is_punct(")") || token.is_punct("]") {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return;
                }
            }
        }
    }

    fn skip_to_semicolon(&mut self) {
        while let Some(token) = self.at(0) {
            self.i += 1;
            if token.is_punct(";") {
                break;
            }
        }
        self.item_start = true;
    }

    /// `#[…]` or `#![…]`: notes `cfg(test)`, `#[test]`-like and `path = "…"`.
    fn attribute(&mut self) {
        let hash = self.tokens[self.i];
        let inner = self.at(1).is_some_and(|t| t.is_punct("!"));
        let open = self.i + 1 + usize::from(inner);
        if !self.tokens.get(open).is_some_and(|t| t.is_punct("[")) {
            self.i += 1;
            self.item_start = false;
            return;
        }
        self.i = open;
        let body_start = open + 1;
        self.skip_group();
        let body = &self.tokens[body_start..self.i.saturating_sub(1).max(body_start)];
        let test = is_cfg_test(body) || (!inner && is_test_attribute(body));
        if inner {
            if test {
                if let Some(frame) = self.frames.last_mut() {
                    frame.test = true;
                }
                self.module_mut().test = true;
            }
            return;
        }
        self.attrs.test |= test;
        self.attrs.first_line.get_or_insert(hash.line);
        if body.len() >= 3 && body[0].is_ident("path") && body[1].is_punct("=") {
            self.attrs.path = body[2].str_value().map(str::to_owned);
        }
    }

    fn use_item(&mut self) {
        let test = self.current_test() || std::mem::take(&mut self.attrs).test;
        self.i += 1;
        let mut leaves = Vec::new();
        self.use_tree(Vec::new(), &mut leaves, test);
        self.skip_to_semicolon();
        self.module_mut().uses.extend(leaves);
    }

    /// One use tree with the segments before it in `prefix`, its leaves appended.
    fn use_tree(&mut self, mut path: Vec<String>, leaves: &mut Vec<UseLeaf>, test: bool) {
        if self.at(0).is_some_and(|t| t.is_punct("::")) {
            // `use ::name` names an external crate, which no module of this one is.
            path.push("::".to_owned());
            self.i += 1;
        }
        while let Some(token) = self.at(0) {
            if token.is_punct("*") {
                self.i += 1;
                leaves.push(UseLeaf {
                    path,
                    binding: UseBinding::Glob,
                    line: token.line,
                    test,
                });
                return;
            }
            if token.is_punct("{") {
                self.i += 1;
                while self
                    .at(0)
                    .is_some_and(|t| !t.is_punct("}") && !t.is_punct(";"))
                {
                    let before = self.i;
                    self.use_tree(path.clone(), leaves, test);
                    if self.at(0).is_some_and(|t| t.is_punct(",")) || self.i == before {
                        self.i += 1;
                    }
                }
                if self.at(0).is_some_and(|t| t.is_punct("}")) {
                    self.i += 1;
                }
                return;
            }
            if !token.is_name() {
                return;
            }
            self.i += 1;
            if self.at(0).is_some_and(|t| t.is_punct("::")) {
                path.push(token.text.to_owned());
                self.i += 1;
                continue;
            }
            let mut bound = token.text.to_owned();
            if token.is_ident("self") && !path.is_empty() {
                bound = path.last().cloned().unwrap_or_default();
            } else {
                path.push(bound.clone());
            }
            if self.at(0).is_some_and(|t| t.is_ident("as")) {
                bound = self.at(1).map(|t| t.text.to_owned()).unwrap_or_default();
                self.i += 2;
            }
            leaves.push(UseLeaf {
                path,
                binding: UseBinding::Name(bound),
                line: token.line,
                test,
            });
            return;
        }
    }
}

/// `cfg(test)`, or `cfg(all(…, test, …))`.
fn is_cfg_test(body: &[Token<'_>]) -> bool {
    let is = |i: usize, word: &str| body.get(i).is_some_and(|t| t.is_ident(word));
    let punct = |i: usize, p: &str| body.get(i).is_some_and(|t| t.is_punct(p));
    if !(is(0, "cfg") && punct(1, "(")) {
        return false;
    }
    if is(2, "test") && punct(3, ")") {
        return true;
    }
    if !(is(2, "all") && punct(3, "(")) {
        return false;
    }
    let mut depth = 0u32;
    for (offset, token) in body[4..].iter().enumerate() {
        match token.text {
            "(" => depth += 1,
            ")" if depth == 0 => return false,
            ")" => depth -= 1,
            "test" if depth == 0 && token.kind == Kind::Ident => {
                let next = body.get(4 + offset + 1);
                if next.is_some_and(|t| t.is_punct(",") || t.is_punct(")")) {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// `#[test]`, `#[tokio::test]`, `#[tokio::test(flavor = …)]`: a path ending in `test`.
fn is_test_attribute(body: &[Token<'_>]) -> bool {
    let path_len = body
        .iter()
        .position(|t| !(t.is_name() || t.is_punct("::")))
        .unwrap_or(body.len());
    path_len > 0 && body[path_len - 1].is_ident("test")
}

#[cfg(test)]
mod tests;
