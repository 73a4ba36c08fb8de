//! Money as integer minor units plus an ISO 4217 currency. Never a float.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An amount of money in minor units (cents) of one currency.
///
/// Serialised as `{"amount_minor": 1299, "currency": "EUR"}`.
/// Never negative on the wire: prices, totals and payments are not
/// (a request with a negative amount is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 1299, "currency": "EUR"}))]
pub struct Money {
    /// Amount in the currency's minor unit (for EUR, cents); a whole number.
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0)]
    amount_minor: i64,
    /// ISO 4217 alphabetic code.
    currency: Currency,
}

impl Money {
    /// Money of `amount_minor` minor units of `currency`.
    pub fn new(amount_minor: i64, currency: Currency) -> Money {
        Money {
            amount_minor,
            currency,
        }
    }

    /// The amount in minor units.
    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// The currency the amount is in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Sum of two amounts of the same currency.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] for different currencies,
    /// [`MoneyError::Overflow`] when the sum does not fit.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        let amount_minor = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount_minor, self.currency))
    }

    /// The amount times a whole quantity.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the product does not fit.
    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let amount_minor = self
            .amount_minor
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount_minor, self.currency))
    }
}

impl Money {
    /// The amount as people write it, in the currency's major unit with
    /// as many decimals as ISO 4217 gives it (`12.99 EUR`, `1299 JPY`,
    /// `1.299 KWD`, `-0.05 EUR`): for text meant for people, such as
    /// emails. The API itself speaks minor units.
    pub fn formatted(&self) -> String {
        let (minor, code) = (self.amount_minor, self.currency);
        let sign = if minor < 0 { "-" } else { "" };
        let magnitude = minor.unsigned_abs();
        match code.minor_units() {
            0 => format!("{sign}{magnitude} {code}"),
            units => {
                let scale = 10u64.pow(units);
                let width = units as usize;
                format!(
                    "{sign}{}.{:0width$} {code}",
                    magnitude / scale,
                    magnitude % scale
                )
            }
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

/// Errors of money arithmetic and parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Two amounts of different currencies were combined.
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch {
        /// Left-hand currency.
        left: Currency,
        /// Right-hand currency.
        right: Currency,
    },
    /// The result does not fit in 64 bits of minor units.
    #[error("amount overflows")]
    Overflow,
    /// The text is not an ISO 4217 currency code.
    #[error("`{0}` is not an ISO 4217 currency code")]
    UnknownCurrency(String),
}

/// An ISO 4217 alphabetic currency code (`EUR`, `USD` ...).
///
/// Only codes of the ISO 4217 list in force are accepted (the schema
/// lists them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let codes = ISO_4217
            .iter()
            .map(|code| Currency(*code).as_str().to_owned());
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An ISO 4217 alphabetic currency code in force (`EUR`, `USD` ...).",
            ))
            .enum_values(Some(codes))
            .examples(["EUR"])
            .build()
            .into()
    }
}

impl ToSchema for Currency {}

impl Currency {
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");
    /// US dollar.
    pub const USD: Currency = Currency(*b"USD");

    /// How many decimal places its minor unit is (ISO 4217): 2 for most,
    /// 0 for the yen, the won and a few others, 3 for the dinars of
    /// Bahrain, Iraq, Jordan, Kuwait, Libya and Tunisia and the Omani rial.
    pub fn minor_units(&self) -> u32 {
        match &self.0 {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII letters of `ISO_4217`.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Currency, MoneyError> {
        let code: [u8; 3] = s
            .as_bytes()
            .try_into()
            .map_err(|_| MoneyError::UnknownCurrency(s.to_owned()))?;
        if ISO_4217.contains(&code) {
            Ok(Currency(code))
        } else {
            Err(MoneyError::UnknownCurrency(s.to_owned()))
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// Active ISO 4217 alphabetic codes (funds and precious metals excluded).
const ISO_4217: &[[u8; 3]] = &[
    *b"AED", *b"AFN", *b"ALL", *b"AMD", *b"AOA", *b"ARS", *b"AUD", *b"AWG", *b"AZN", *b"BAM",
    *b"BBD", *b"BDT", *b"BHD", *b"BIF", *b"BMD", *b"BND", *b"BOB", *b"BRL", *b"BSD", *b"BTN",
    *b"BWP", *b"BYN", *b"BZD", *b"CAD", *b"CDF", *b"CHF", *b"CLP", *b"CNY", *b"COP", *b"CRC",
    *b"CUP", *b"CVE", *b"CZK", *b"DJF", *b"DKK", *b"DOP", *b"DZD", *b"EGP", *b"ERN", *b"ETB",
    *b"EUR", *b"FJD", *b"FKP", *b"GBP", *b"GEL", *b"GHS", *b"GIP", *b"GMD", *b"GNF", *b"GTQ",
    *b"GYD", *b"HKD", *b"HNL", *b"HTG", *b"HUF", *b"IDR", *b"ILS", *b"INR", *b"IQD", *b"IRR",
    *b"ISK", *b"JMD", *b"JOD", *b"JPY", *b"KES", *b"KGS", *b"KHR", *b"KMF", *b"KPW", *b"KRW",
    *b"KWD", *b"KYD", *b"KZT", *b"LAK", *b"LBP", *b"LKR", *b"LRD", *b"LSL", *b"LYD", *b"MAD",
    *b"MDL", *b"MGA", *b"MKD", *b"MMK", *b"MNT", *b"MOP", *b"MRU", *b"MUR", *b"MVR", *b"MWK",
    *b"MXN", *b"MYR", *b"MZN", *b"NAD", *b"NGN", *b"NIO", *b"NOK", *b"NPR", *b"NZD", *b"OMR",
    *b"PAB", *b"PEN", *b"PGK", *b"PHP", *b"PKR", *b"PLN", *b"PYG", *b"QAR", *b"RON", *b"RSD",
    *b"RUB", *b"RWF", *b"SAR", *b"SBD", *b"SCR", *b"SDG", *b"SEK", *b"SGD", *b"SHP", *b"SLE",
    *b"SOS", *b"SRD", *b"SSP", *b"STN", *b"SVC", *b"SYP", *b"SZL", *b"THB", *b"TJS", *b"TMT",
    *b"TND", *b"TOP", *b"TRY", *b"TTD", *b"TWD", *b"TZS", *b"UAH", *b"UGX", *b"USD", *b"UYU",
    *b"UZS", *b"VES", *b"VND", *b"VUV", *b"WST", *b"XAF", *b"XCD", *b"XOF", *b"XPF", *b"YER",
    *b"ZAR", *b"ZMW", *b"ZWG",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_serialises_as_minor_units_and_code() {
        let money = Money::new(1299, Currency::EUR);
        let json = serde_json::to_value(money).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"amount_minor": 1299, "currency": "EUR"})
        );
        let back: Money = serde_json::from_value(json).unwrap();
        assert_eq!(back, money);
    }

    #[test]
    fn unknown_or_lowercase_currency_is_rejected() {
        assert!("eur".parse::<Currency>().is_err());
        assert!("EURO".parse::<Currency>().is_err());
        assert!("ABC".parse::<Currency>().is_err());
        assert_eq!("JPY".parse::<Currency>().unwrap().as_str(), "JPY");
        let err = serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"XYZ"}"#);
        assert!(err.unwrap_err().to_string().contains("XYZ"));
    }

    #[test]
    fn money_is_written_for_people_with_its_currency_s_decimals() {
        let money = |minor: i64, code: &str| Money::new(minor, code.parse().unwrap()).formatted();
        assert_eq!(money(1299, "EUR"), "12.99 EUR");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-5, "EUR"), "-0.05 EUR");
        assert_eq!(money(-1299, "USD"), "-12.99 USD");
        assert_eq!(money(1299, "JPY"), "1299 JPY");
        assert_eq!(money(1299, "KWD"), "1.299 KWD");
        assert_eq!(money(7, "TND"), "0.007 TND");
        assert_eq!(money(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
    }

    #[test]
    fn floats_are_not_money() {
        let err = serde_json::from_str::<Money>(r#"{"amount_minor":12.99,"currency":"EUR"}"#);
        assert!(err.is_err());
        // A whole number is one however it is written.
        let whole: Money =
            serde_json::from_str(r#"{"amount_minor":1299.0,"currency":"EUR"}"#).unwrap();
        assert_eq!(whole, Money::new(1299, Currency::EUR));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"EUR","anything":true}"#);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("unknown field `anything`")
        );
    }

    #[test]
    fn the_schema_lists_the_codes_in_force() {
        let schema = serde_json::to_value(<Currency as utoipa::PartialSchema>::schema()).unwrap();
        let codes = schema["enum"].as_array().unwrap();
        assert_eq!(codes.len(), ISO_4217.len());
        assert!(codes.contains(&serde_json::json!("EUR")));
        assert!(!codes.contains(&serde_json::json!("XYZ")));
    }

    #[test]
    fn arithmetic_checks_currency_and_overflow() {
        let eur = Money::new(100, Currency::EUR);
        assert_eq!(eur.checked_add(eur).unwrap().amount_minor(), 200);
        assert!(matches!(
            eur.checked_add(Money::new(1, Currency::USD)),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            Money::new(i64::MAX, Currency::EUR).checked_add(eur),
            Err(MoneyError::Overflow)
        );
        assert_eq!(eur.checked_mul(3).unwrap().amount_minor(), 300);
    }
}
