"""Helpers every floor may use: atomic file writes (:mod:`.io`) and the machine a job runs on (:mod:`.runtime`)."""
