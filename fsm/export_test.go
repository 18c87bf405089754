package fsm

// Fingerprint exposes a take's content fingerprint to the external tests (snapshots they craft).
func Fingerprint(t Take) uint64 { return t.fingerprint() }
