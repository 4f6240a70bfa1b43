//! sluice-proxy: edge, agent and wire protocol (work in progress, see issue 3).
