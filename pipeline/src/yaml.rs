//! Reading YAML that someone else wrote without letting its aliases blow up.
//!
//! YAML aliases (`*a`) repeat an anchored node (`&a`) wherever they appear, and
//! `serde_yaml` expands them while it builds a value: a 2 MB request made of one 1 MB
//! anchored string and 300,000 aliases asks for 300 GB. `serde_yaml`'s own guard counts
//! alias events, not bytes, so it lets that through. [`bounded_value`] builds the same
//! [`serde_yaml::Value`] but charges every node and every byte of every scalar it
//! copies, aliases included, against a budget, and stops with an error as soon as the
//! budget is spent; memory use is then bounded by the budget, whatever the input.
//! Custom tags (`!thing`) have no meaning in a pipeline and are refused.

use std::cell::Cell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};

/// Bytes a document may expand to. A valid agent configuration is at most 4 MiB
/// ([`crate::agent_config::MAX_AGENT_CONFIG_BYTES`]), so no document a pipeline can come
/// from needs more than twice that; anything larger is an alias bomb or not a pipeline.
pub const MAX_EXPANDED_DOCUMENT_BYTES: usize = 8 << 20;

/// What every node costs besides its scalar bytes: its `Value` and its place in a
/// sequence or mapping, so a million tiny aliases are charged as well as one huge one.
const NODE_COST: usize = 32;

/// Deserializes one YAML document into a [`Value`], refusing it once its expanded size
/// passes `budget` bytes (see the module doc).
pub fn bounded_value<'de, D: Deserializer<'de>>(
    deserializer: D,
    budget: usize,
) -> Result<Value, D::Error> {
    let remaining = Cell::new(budget);
    Node {
        remaining: &remaining,
        budget,
    }
    .deserialize(deserializer)
}

/// One node of the value being built, with the budget shared by the whole document.
#[derive(Clone, Copy)]
struct Node<'b> {
    remaining: &'b Cell<usize>,
    budget: usize,
}

impl Node<'_> {
    fn charge<E: de::Error>(self, bytes: usize) -> Result<(), E> {
        let cost = bytes.saturating_add(NODE_COST);
        match self.remaining.get().checked_sub(cost) {
            Some(left) => {
                self.remaining.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "the document expands to more than {} bytes (YAML aliases repeat what they \
                 refer to); write it without aliases",
                self.budget
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "YAML tags (`!name`) are not used in pipelines; remove the tag",
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn read(text: &str, budget: usize) -> Result<Value, serde_yaml::Error> {
        bounded_value(serde_yaml::Deserializer::from_str(text), budget)
    }

    #[test]
    fn an_ordinary_document_reads_as_serde_yaml_reads_it() {
        let text = "a: 1\nb: [true, -2, 3.5, null, \"x\"]\nc: {d: &e hello, f: *e}\n";
        let expected = Value::deserialize(serde_yaml::Deserializer::from_str(text)).unwrap();
        assert_eq!(read(text, MAX_EXPANDED_DOCUMENT_BYTES).unwrap(), expected);
    }

    /// The alias bomb the control-port review found: one anchored string repeated by
    /// many aliases is refused once what it expands to passes the budget, long before
    /// it would be built.
    #[test]
    fn aliases_that_expand_past_the_budget_are_refused() {
        let big = "x".repeat(64 * 1024);
        let aliases = "*a, ".repeat(1_000);
        let text = format!("anchor: &a \"{big}\"\nrepeats: [{aliases}]\n");
        assert!(text.len() < 80 * 1024);
        let error = read(&text, MAX_EXPANDED_DOCUMENT_BYTES).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expands to more than 8388608 bytes"),
            "{error}"
        );
        // Without the repeats it fits.
        assert!(
            read(
                &format!("anchor: &a \"{big}\"\n"),
                MAX_EXPANDED_DOCUMENT_BYTES
            )
            .is_ok()
        );
    }

    /// Nested aliases (the "billion laughs"): a billion nodes from a few hundred bytes.
    /// serde_yaml's own guard counts the events aliases repeat and stops this one; the
    /// byte budget above is for the few-aliases-of-a-big-node case it lets through.
    #[test]
    fn nested_aliases_are_refused() {
        let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let previous = level - 1;
            let refs = vec![format!("*l{previous}"); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
        }
        assert!(read(&text, MAX_EXPANDED_DOCUMENT_BYTES).is_err());
    }

    #[test]
    fn custom_tags_are_refused() {
        let error = read("a: !thing 1\n", MAX_EXPANDED_DOCUMENT_BYTES).unwrap_err();
        assert!(error.to_string().contains("YAML tags"), "{error}");
    }
}
