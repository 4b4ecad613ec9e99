//go:build !unix

package redistest

import "os"

// This system cannot pause a process; Pause and Resume skip the test.
var sigStop, sigCont os.Signal
