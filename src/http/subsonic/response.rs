//! One answer, two encodings: a Subsonic response is built once as a small
//! tree of elements and written as XML (the default) or JSON (`f=json`,
//! `f=jsonp`), with the JSON types the spec gives (numbers as numbers,
//! booleans as booleans) and lists that stay lists with one item. Pure.

use std::fmt::Write;

/// The API version we speak.
pub const API_VERSION: &str = "1.16.1";
/// Who we are, in every response.
pub const SERVER_TYPE: &str = "tunemesh";

/// An attribute value, typed for JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A string (ids are strings everywhere).
    Str(String),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// true or false.
    Bool(bool),
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Str(s.to_string())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Str(s)
    }
}
impl From<bool> for Val {
    fn from(b: bool) -> Val {
        Val::Bool(b)
    }
}
macro_rules! int_val {
    ($($t:ty),*) => {$(
        impl From<$t> for Val {
            fn from(n: $t) -> Val {
                Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_val!(i32, i64, u8, u16, u32, u64, usize);
impl From<f64> for Val {
    fn from(n: f64) -> Val {
        Val::Float(n)
    }
}

/// A child of an element: one element, or a list (a JSON array even with
/// one or no item).
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    /// Exactly one.
    One(Elem),
    /// Any number.
    Many(Vec<Elem>),
    /// Numbers (`<versions>1</versions>` in XML, `[1]` in JSON).
    Ints(Vec<i64>),
}

/// An element: attributes, children by name, and optional text (the
/// `value` of a JSON object).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Elem {
    attrs: Vec<(&'static str, Val)>,
    children: Vec<(&'static str, Child)>,
    text: Option<String>,
}

impl Elem {
    /// An empty element.
    pub fn new() -> Elem {
        Elem::default()
    }

    /// With attribute `k`.
    pub fn attr(mut self, k: &'static str, v: impl Into<Val>) -> Elem {
        self.attrs.push((k, v.into()));
        self
    }

    /// With attribute `k` when `v` is some.
    pub fn opt(self, k: &'static str, v: Option<impl Into<Val>>) -> Elem {
        match v {
            Some(v) => self.attr(k, v),
            None => self,
        }
    }

    /// With one child element `name`.
    pub fn child(mut self, name: &'static str, e: Elem) -> Elem {
        self.children.push((name, Child::One(e)));
        self
    }

    /// With a list of child elements `name`.
    pub fn list(mut self, name: &'static str, items: Vec<Elem>) -> Elem {
        self.children.push((name, Child::Many(items)));
        self
    }

    /// With a list of numbers `name`.
    pub fn ints(mut self, name: &'static str, items: Vec<i64>) -> Elem {
        self.children.push((name, Child::Ints(items)));
        self
    }

    /// With text content.
    pub fn text(mut self, t: impl Into<String>) -> Elem {
        self.text = Some(t.into());
        self
    }
}

/// How the client asked to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `f=xml` or nothing.
    Xml,
    /// `f=json`.
    Json,
    /// `f=jsonp&callback=NAME` (NAME checked: letters, digits, `_$.`).
    Jsonp(String),
}

impl Format {
    /// From the `f` and `callback` parameters.
    pub fn of(f: Option<&str>, callback: Option<&str>) -> Format {
        match f {
            Some("json") => Format::Json,
            Some("jsonp") => match callback {
                Some(c)
                    if !c.is_empty()
                        && c.len() <= 64
                        && c.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "_$.".contains(ch)) =>
                {
                    Format::Jsonp(c.to_string())
                }
                _ => Format::Json,
            },
            _ => Format::Xml,
        }
    }

    /// The content type of an answer in this format.
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Xml => "text/xml; charset=utf-8",
            Format::Json => "application/json",
            Format::Jsonp(_) => "application/javascript",
        }
    }
}

/// The root element with the fields every answer has.
fn root(status: &str) -> Elem {
    Elem::new()
        .attr("status", status)
        .attr("version", API_VERSION)
        .attr("type", SERVER_TYPE)
        .attr("serverVersion", env!("CARGO_PKG_VERSION"))
        .attr("openSubsonic", true)
}

/// A success, with the payload's children under the root.
pub fn ok(payload: Vec<(&'static str, Elem)>) -> Elem {
    let mut r = root("ok");
    for (name, e) in payload {
        r = r.child(name, e);
    }
    r
}

/// A failure with the spec's code.
pub fn failed(code: u32, message: &str) -> Elem {
    root("failed").child(
        "error",
        Elem::new().attr("code", code).attr("message", message),
    )
}

fn escape_xml(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all: dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
}

fn val_text(v: &Val, out: &mut String) {
    match v {
        Val::Str(s) => escape_xml(s, out),
        Val::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Val::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
    }
}

fn xml_elem(name: &str, e: &Elem, out: &mut String, top: bool) {
    out.push('<');
    out.push_str(name);
    if top {
        out.push_str(" xmlns=\"http://subsonic.org/restapi\"");
    }
    for (k, v) in &e.attrs {
        let _ = write!(out, " {k}=\"");
        val_text(v, out);
        out.push('"');
    }
    if e.children.is_empty() && e.text.is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    if let Some(t) = &e.text {
        escape_xml(t, out);
    }
    for (n, c) in &e.children {
        match c {
            Child::One(e) => xml_elem(n, e, out, false),
            Child::Many(v) => v.iter().for_each(|e| xml_elem(n, e, out, false)),
            Child::Ints(v) => v.iter().for_each(|i| {
                let _ = write!(out, "<{n}>{i}</{n}>");
            }),
        }
    }
    let _ = write!(out, "</{name}>");
}

fn json_val(v: &Val) -> serde_json::Value {
    match v {
        Val::Str(s) => serde_json::Value::String(s.clone()),
        Val::Int(n) => serde_json::Value::from(*n),
        Val::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Val::Bool(b) => serde_json::Value::Bool(*b),
    }
}

fn json_elem(e: &Elem) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in &e.attrs {
        m.insert((*k).to_string(), json_val(v));
    }
    if let Some(t) = &e.text {
        m.insert("value".into(), serde_json::Value::String(t.clone()));
    }
    for (n, c) in &e.children {
        let v = match c {
            Child::One(e) => json_elem(e),
            Child::Many(v) => serde_json::Value::Array(v.iter().map(json_elem).collect()),
            Child::Ints(v) => {
                serde_json::Value::Array(v.iter().map(|i| serde_json::Value::from(*i)).collect())
            }
        };
        m.insert((*n).to_string(), v);
    }
    serde_json::Value::Object(m)
}

/// Write `root` (made by [`ok`] or [`failed`]) in `format`.
pub fn render(root: &Elem, format: &Format) -> String {
    match format {
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            xml_elem("subsonic-response", root, &mut out, true);
            out
        }
        Format::Json => serde_json::json!({ "subsonic-response": json_elem(root) }).to_string(),
        Format::Jsonp(cb) => format!(
            "{cb}({});",
            serde_json::json!({ "subsonic-response": json_elem(root) })
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Elem {
        ok(vec![(
            "artists",
            Elem::new().attr("ignoredArticles", "The").list(
                "index",
                vec![Elem::new().attr("name", "A").list(
                    "artist",
                    vec![Elem::new()
                        .attr("id", "ar-1")
                        .attr("name", "A & <B>")
                        .attr("albumCount", 2u32)],
                )],
            ),
        )])
    }

    #[test]
    fn one_tree_two_encodings() {
        let x = render(&sample(), &Format::Xml);
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><subsonic-response xmlns=\"http://subsonic.org/restapi\" status=\"ok\" version=\"1.16.1\" type=\"tunemesh\""));
        assert!(
            x.contains("<artist id=\"ar-1\" name=\"A &amp; &lt;B&gt;\" albumCount=\"2\"/>"),
            "{x}"
        );
        assert!(x.contains("openSubsonic=\"true\""));
        let j: serde_json::Value = serde_json::from_str(&render(&sample(), &Format::Json)).unwrap();
        let r = &j["subsonic-response"];
        assert_eq!(r["status"], "ok");
        assert_eq!(r["openSubsonic"], true);
        // A list of one stays a list; numbers stay numbers.
        assert_eq!(r["artists"]["index"][0]["artist"][0]["albumCount"], 2);
        assert_eq!(r["artists"]["index"][0]["artist"][0]["name"], "A & <B>");
    }

    #[test]
    fn errors_text_and_jsonp() {
        let e = failed(70, "no such album");
        let j: serde_json::Value = serde_json::from_str(&render(&e, &Format::Json)).unwrap();
        assert_eq!(j["subsonic-response"]["status"], "failed");
        assert_eq!(j["subsonic-response"]["error"]["code"], 70);
        let l = ok(vec![(
            "lyrics",
            Elem::new().attr("artist", "a").text("line 1\nline 2 <3"),
        )]);
        assert!(
            render(&l, &Format::Xml).contains("<lyrics artist=\"a\">line 1\nline 2 &lt;3</lyrics>")
        );
        let j: serde_json::Value = serde_json::from_str(&render(&l, &Format::Json)).unwrap();
        assert_eq!(
            j["subsonic-response"]["lyrics"]["value"],
            "line 1\nline 2 <3"
        );
        assert_eq!(
            Format::of(Some("jsonp"), Some("cb_1")),
            Format::Jsonp("cb_1".into())
        );
        assert_eq!(Format::of(Some("jsonp"), Some("alert(1)//")), Format::Json);
        assert!(render(&l, &Format::Jsonp("cb".into())).starts_with("cb({\"subsonic-response\""));
        // Control characters cannot be in XML: dropped, not sent broken.
        let c = ok(vec![("x", Elem::new().attr("v", "a\u{1}b"))]);
        assert!(render(&c, &Format::Xml).contains("v=\"ab\""));
    }
}
