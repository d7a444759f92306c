//! cohort-io-sim: the turmoil driver. Owns simulated hosts and links, simulated commands and
//! in-memory storage that loses unsynced writes on a crash, so cohort-core's machines run under
//! partitions, loss and crashes with every run replayable from its seed. Protocol rules never live
//! here. The harness lands with the configuration-agreement issue.
