//! Job runners (`repobox runner`, the worker half of `repobox all`): consume
//! `jobs:stream` in the consumer group `runners`, prepare a work tree, run the agent in
//! the sandbox, push and open the pull/merge request.
//!
//! Not built yet (the runner issue). Until then `serve` acknowledges and dispatches jobs
//! to `jobs:stream`, where they wait, durable, for the first runner.
