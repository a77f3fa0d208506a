package shmproto

// RawOutcomeID reads an op's outcome id field as stored, whatever the
// throttle word says (ReadThrottle hides it under a non-sidecar word), so
// tests can prove that a release really cleared it.
func (s *Segment) RawOutcomeID(i int, op Op) (int64, error) {
	var id int64
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		id = sl.Ops[op].OutcomeID.Load()
		return nil
	})
	return id, err
}
