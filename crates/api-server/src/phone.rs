//! Phone numbers in E.164, parsed once at the edge with the `phonenumber`
//! crate (Google's libphonenumber metadata).

use std::fmt;

use phonenumber::{country, Mode};

/// The region a number without a `+` country code is read in: the US, as
/// Twilio numbers are written there.
pub const DEFAULT_REGION: country::Id = country::Id::US;

/// A valid phone number, as `+` and digits (E.164).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Reads a number written any usual way (`+1 415-555-0100`,
    /// `(415) 555 0100`); refuses what is not a valid number.
    pub fn parse(input: &str) -> Option<Self> {
        let input = input.trim();
        if input.is_empty() || input.len() > 64 {
            return None;
        }
        let parsed = phonenumber::parse(Some(DEFAULT_REGION), input).ok()?;
        if !phonenumber::is_valid(&parsed) {
            return None;
        }
        let e164 = parsed.format().mode(Mode::E164).to_string();
        // libphonenumber rewrites some numbers (it takes digits for a national
        // prefix and drops them: `+321110000000` became `+3210000000`). A
        // number stored under other digits would thread one person's texts
        // with another's, so a number written with its country code must keep
        // its digits, and every number must read back as itself.
        if input.starts_with('+') && digits(input) != e164[1..] {
            return None;
        }
        let again = phonenumber::parse(None, &e164).ok()?;
        if !phonenumber::is_valid(&again) || again.format().mode(Mode::E164).to_string() != e164 {
            return None;
        }
        Some(PhoneNumber(e164))
    }

    /// The E.164 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The digits of `text`, in order.
fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_to_e164() {
        assert_eq!(
            PhoneNumber::parse("+1 (415) 555-2671").unwrap().as_str(),
            "+14155552671"
        );
        assert_eq!(
            PhoneNumber::parse("415 555 2671").unwrap().as_str(),
            "+14155552671"
        );
        assert_eq!(
            PhoneNumber::parse("+44 20 7946 0958").unwrap().as_str(),
            "+442079460958"
        );
        // Read by libphonenumber as another number: refused, not rewritten.
        assert!(PhoneNumber::parse("+321110000000").is_none());
        for bad in ["", "hello", "+1", "123", "+1 415 555 26711234567"] {
            assert!(PhoneNumber::parse(bad).is_none(), "{bad}");
        }
    }
}
