//! What a job's tokens cost: a price table per model, in US dollars per million tokens.
//!
//! Built-in prices are Anthropic's list prices for the models this release knows, with
//! 5-minute cache writes (what `cache_control: ephemeral` buys) at 1.25× and cache
//! reads at 0.1× the input price. `REPOBOX_MODEL_PRICES` adds or overrides entries:
//! `model=input,output[,cache_write,cache_read]` separated by `;`, e.g.
//! `claude-sonnet-4-5=3,15,3.75,0.3;my-proxy-model=1,2`. A model id matches the longest
//! entry it starts with, so a dated id (`claude-sonnet-4-5-20250929`) finds its family.
//! A model without a price gets no cost at all, never a guessed one.
//!
//! Not modelled: Sonnet's long-context rate above 200k input tokens, 1-hour cache
//! writes, batch discounts, and server tools (web search) priced per use.

use std::collections::BTreeMap;

use crate::agent::Usage;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_write: f64,
    pub cache_read: f64,
}

impl Price {
    /// Cache prices derived from the input price as Anthropic sets them.
    pub const fn standard(input: f64, output: f64) -> Price {
        Price {
            input,
            output,
            cache_write: input * 1.25,
            cache_read: input * 0.1,
        }
    }

    pub fn cost(&self, usage: &Usage) -> f64 {
        let per_token = |n: u64, price: f64| n as f64 * price / 1_000_000.0;
        per_token(usage.input_tokens, self.input)
            + per_token(usage.output_tokens, self.output)
            + per_token(usage.cache_write_tokens, self.cache_write)
            + per_token(usage.cache_read_tokens, self.cache_read)
    }
}

const BUILT_IN: &[(&str, Price)] = &[
    ("claude-opus-4-5", Price::standard(5.0, 25.0)),
    ("claude-opus-4-1", Price::standard(15.0, 75.0)),
    ("claude-opus-4", Price::standard(15.0, 75.0)),
    ("claude-sonnet-4-5", Price::standard(3.0, 15.0)),
    ("claude-sonnet-4", Price::standard(3.0, 15.0)),
    ("claude-3-7-sonnet", Price::standard(3.0, 15.0)),
    ("claude-haiku-4-5", Price::standard(1.0, 5.0)),
    ("claude-3-5-haiku", Price::standard(0.8, 4.0)),
];

#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable {
            prices: BUILT_IN
                .iter()
                .map(|(m, p)| ((*m).to_owned(), *p))
                .collect(),
        }
    }
}

impl PriceTable {
    /// The built-in table with `overrides` (the `REPOBOX_MODEL_PRICES` syntax) applied.
    pub fn with_overrides(overrides: &str) -> Result<PriceTable, String> {
        let mut table = PriceTable::default();
        for entry in overrides
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (model, numbers) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}`: expected model=input,output"))?;
            let numbers: Vec<f64> = numbers
                .split(',')
                .map(|n| n.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("`{entry}`: prices must be numbers"))?;
            if numbers.iter().any(|n| !n.is_finite() || *n < 0.0) {
                return Err(format!("`{entry}`: prices must be zero or more"));
            }
            let price = match numbers[..] {
                [input, output] => Price::standard(input, output),
                [input, output, cache_write, cache_read] => Price {
                    input,
                    output,
                    cache_write,
                    cache_read,
                },
                _ => {
                    return Err(format!(
                        "`{entry}`: give 2 prices (input,output) or 4 (input,output,cache_write,cache_read)"
                    ));
                }
            };
            table.prices.insert(model.trim().to_owned(), price);
        }
        Ok(table)
    }

    /// The price of `model`: an exact entry, else the longest entry it starts with.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }

    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_ids_find_their_family_and_the_longest_entry_wins() {
        let t = PriceTable::default();
        assert_eq!(
            t.price("claude-sonnet-4-5-20250929"),
            Some(Price::standard(3.0, 15.0))
        );
        assert_eq!(t.price("claude-opus-4-5"), Some(Price::standard(5.0, 25.0)));
        assert_eq!(
            t.price("claude-opus-4-20250514"),
            Some(Price::standard(15.0, 75.0))
        );
        assert_eq!(t.price("gpt-4o"), None);
    }

    #[test]
    fn cost_adds_every_kind_of_token() {
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_write_tokens: 200_000,
            cache_read_tokens: 2_000_000,
        };
        // 3 + 1.5 + 0.75 + 0.6
        let cost = PriceTable::default()
            .cost("claude-sonnet-4-5", &usage)
            .unwrap();
        assert!((cost - 5.85).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn overrides_add_and_replace_entries() {
        let t = PriceTable::with_overrides("claude-sonnet-4-5=6,30; local-model=1,2,3,4").unwrap();
        assert_eq!(
            t.price("claude-sonnet-4-5"),
            Some(Price::standard(6.0, 30.0))
        );
        assert_eq!(
            t.price("local-model-x"),
            Some(Price {
                input: 1.0,
                output: 2.0,
                cache_write: 3.0,
                cache_read: 4.0
            })
        );
        for bad in ["nonsense", "m=1", "m=a,b", "m=1,-2", "m=1,2,3"] {
            assert!(PriceTable::with_overrides(bad).is_err(), "{bad}");
        }
    }
}
