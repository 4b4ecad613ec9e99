// Package qrsvg renders text as a QR code image: a compact, scalable SVG, or
// a PNG.
//
// The SVG draws one module per user unit inside a viewBox, so it scales to any
// size without blurring. Each horizontal run of dark modules becomes one
// rectangle, drawn as a one-unit-wide stroke along the middle of its row, all
// in a single <path> with relative moves; that keeps a typical login URL's
// code under 2 KB.
package qrsvg

import (
	"bytes"
	"fmt"
	"strconv"

	"rsc.io/qr"
)

// QuietZone is the light margin, in modules, around the code. Four modules is
// what the QR standard asks for and what phone scanners rely on.
const QuietZone = 4

// level is the error correction level. M recovers from about 15% damage,
// which suits a code shown on a screen, at a modest size cost over L.
const level = qr.M

func encode(content string) (*qr.Code, error) {
	code, err := qr.Encode(content, level)
	if err != nil {
		return nil, fmt.Errorf("qrsvg: encode %d bytes: %w", len(content), err)
	}
	return code, nil
}

// SVG renders content as a QR code in SVG, dark on a white background,
// including the quiet zone. The image has no intrinsic size; set one with
// CSS or width and height attributes.
func SVG(content string) ([]byte, error) {
	code, err := encode(content)
	if err != nil {
		return nil, err
	}
	return renderSVG(code), nil
}

// PNG renders content as a QR code in PNG with scale pixels per module,
// including the quiet zone.
func PNG(content string, scale int) ([]byte, error) {
	if scale < 1 || scale > 64 {
		return nil, fmt.Errorf("qrsvg: scale %d out of range 1..64", scale)
	}
	code, err := encode(content)
	if err != nil {
		return nil, err
	}
	code.Scale = scale
	return code.PNG(), nil
}

func renderSVG(code *qr.Code) []byte {
	n := code.Size + 2*QuietZone
	dim := strconv.Itoa(n)

	var b bytes.Buffer
	b.Grow(256 + code.Size*code.Size/2)
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 `)
	b.WriteString(dim + " " + dim)
	b.WriteString(`" shape-rendering="crispEdges"><rect width="`)
	b.WriteString(dim + `" height="` + dim)
	b.WriteString(`" fill="#fff"/><path fill="none" stroke="#000" stroke-width="1" d="`)
	writeRuns(&b, code)
	b.WriteString(`"/></svg>`)
	return b.Bytes()
}

// writeRuns writes one horizontal line per run of dark modules, through the
// middle of its row, so that the one-unit stroke (with the default butt caps)
// covers exactly the run's modules. After "h", the current point is the end
// of the run; each move is relative to it, which keeps the numbers short.
func writeRuns(b *bytes.Buffer, code *qr.Code) {
	var num [8]byte
	first := true
	px, py := 0, 0 // end of the previous run, in module coordinates
	for y := range code.Size {
		for x := 0; x < code.Size; {
			if !code.Black(x, y) {
				x++
				continue
			}
			start := x
			for x < code.Size && code.Black(x, y) {
				x++
			}
			sx, sy := start+QuietZone, y+QuietZone
			if first {
				b.WriteByte('M')
				b.Write(strconv.AppendInt(num[:0], int64(sx), 10))
				b.WriteByte(' ')
				b.Write(strconv.AppendInt(num[:0], int64(sy), 10))
				b.WriteString(".5")
				first = false
			} else {
				b.WriteByte('m')
				b.Write(strconv.AppendInt(num[:0], int64(sx-px), 10))
				b.WriteByte(' ')
				b.Write(strconv.AppendInt(num[:0], int64(sy-py), 10))
			}
			b.WriteByte('h')
			b.Write(strconv.AppendInt(num[:0], int64(x-start), 10))
			px, py = x+QuietZone, sy
		}
	}
}
