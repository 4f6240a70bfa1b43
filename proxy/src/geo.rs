//! The operator's country database (`geoip: { database: FILE }` in edge.yml), in
//! MaxMind's format (GeoLite2-Country, GeoIP2-Country or -City, DB-IP's lite files):
//! what `conn.geo.country_code` reads in a traffic policy. Read whole into memory when
//! the edge starts or reloads its file ([`install`]); looked up only for connections
//! whose policy asks for a country.

use std::{net::IpAddr, path::Path, sync::Arc};

use arc_swap::ArcSwapOption;
use maxminddb::Reader;
use serde::Deserialize;

/// An open country database.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    description: String,
}

/// The part of a record read: `country.iso_code` (a City database has it too).
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

impl GeoDb {
    /// Reads and checks `path` (its metadata and the search tree's start).
    pub fn open(path: &Path) -> Result<GeoDb, String> {
        let reader = Reader::open_readfile(path)
            .map_err(|e| format!("{}: not a MaxMind database: {e}", path.display()))?;
        let kind = reader.metadata.database_type.clone();
        // One lookup proves the tree and the data section are readable.
        reader
            .lookup::<Record>(IpAddr::from([192, 0, 2, 1]))
            .map_err(|e| format!("{}: unreadable records: {e}", path.display()))?;
        Ok(GeoDb {
            description: format!("{} ({kind})", path.display()),
            reader,
        })
    }

    /// The ISO 3166 alpha-2 code of `ip`'s country, if the database knows it.
    pub fn country_code(&self, ip: IpAddr) -> Option<String> {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let record = self.reader.lookup::<Record>(ip).ok()??;
        record.country?.iso_code.map(str::to_owned)
    }

    /// The file and its database type, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }
}

static DATABASE: ArcSwapOption<GeoDb> = ArcSwapOption::const_empty();

/// Makes `db` the database every policy reads (`None`: no countries known).
pub fn install(db: Option<Arc<GeoDb>>) {
    DATABASE.store(db);
}

/// Whether a database is installed (the admin API refuses policies that read a
/// country when none is).
pub fn installed() -> bool {
    DATABASE.load().is_some()
}

/// `ip`'s country from the installed database.
pub fn country_code(ip: IpAddr) -> Option<String> {
    DATABASE.load().as_ref()?.country_code(ip)
}
