//! sluice-policy: the traffic policy engine (work in progress, see issue 2).
