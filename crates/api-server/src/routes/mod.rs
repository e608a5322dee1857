//! HTTP handlers, one file per endpoint, mirroring the Next app's
//! `app/api/…/route.ts`.

pub mod api;
pub mod page;
