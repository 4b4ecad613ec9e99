package qrsvg

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"image/png"
	"math"
	"strconv"
	"strings"
	"testing"

	"rsc.io/qr"
)

// typicalURL is the shape of a WeChat QR ticket URL (40 characters).
const typicalURL = "http://weixin.qq.com/q/02Ab3Cd4Ef5Gh6Ij7"

type svgDoc struct {
	XMLName        xml.Name `xml:"http://www.w3.org/2000/svg svg"`
	ViewBox        string   `xml:"viewBox,attr"`
	ShapeRendering string   `xml:"shape-rendering,attr"`
	Rects          []struct {
		Width  string `xml:"width,attr"`
		Height string `xml:"height,attr"`
		Fill   string `xml:"fill,attr"`
	} `xml:"rect"`
	Paths []struct {
		D           string `xml:"d,attr"`
		Fill        string `xml:"fill,attr"`
		Stroke      string `xml:"stroke,attr"`
		StrokeWidth string `xml:"stroke-width,attr"`
	} `xml:"path"`
}

// rasterize draws an SVG path made only of moves (M/m) and horizontal lines
// (H/h), stroked one unit wide with butt caps, onto an n×n module grid,
// independently of how renderSVG writes it. Every line must run along the
// middle of a module row and cover whole modules.
func rasterize(t *testing.T, d string, n int) [][]bool {
	t.Helper()
	grid := make([][]bool, n)
	for i := range grid {
		grid[i] = make([]bool, n)
	}
	toks := tokenize(t, d)
	num := func(i int) float64 {
		if i >= len(toks) {
			t.Fatalf("path ends early: %q", d)
		}
		v, err := strconv.ParseFloat(toks[i], 64)
		if err != nil {
			t.Fatalf("bad number %q in path", toks[i])
		}
		return v
	}
	var cx, cy float64
	for i := 0; i < len(toks); i++ {
		switch cmd := toks[i]; cmd {
		case "m", "M":
			x, y := num(i+1), num(i+2)
			i += 2
			if cmd == "m" {
				x, y = cx+x, cy+y
			}
			cx, cy = x, y
		case "h", "H":
			x := num(i + 1)
			i++
			if cmd == "h" {
				x += cx
			}
			x0, x1 := min(cx, x), max(cx, x)
			row := cy - 0.5
			if row != math.Trunc(row) || x0 != math.Trunc(x0) || x1 != math.Trunc(x1) || x0 == x1 {
				t.Fatalf("line from %v to %v at y=%v does not cover whole modules", x0, x1, cy)
			}
			for m := int(x0); m < int(x1); m++ {
				if m < 0 || int(row) < 0 || m >= n || int(row) >= n {
					t.Fatalf("module %d,%d is outside the viewBox", m, int(row))
				}
				if grid[int(row)][m] {
					t.Fatalf("module %d,%d drawn twice", m, int(row))
				}
				grid[int(row)][m] = true
			}
			cx = x
		default:
			t.Fatalf("unexpected token %q in path", toks[i])
		}
	}
	return grid
}

func tokenize(t *testing.T, d string) []string {
	var toks []string
	for i := 0; i < len(d); {
		c := d[i]
		switch {
		case c == ' ' || c == ',':
			i++
		case strings.IndexByte("mMhH", c) >= 0:
			toks = append(toks, string(c))
			i++
		case c == '-' || c == '.' || '0' <= c && c <= '9':
			j := i + 1
			for j < len(d) && ('0' <= d[j] && d[j] <= '9' || d[j] == '.') {
				j++
			}
			toks = append(toks, d[i:j])
			i = j
		default:
			t.Fatalf("unexpected byte %q in path", c)
		}
	}
	return toks
}

// checkSVG parses out as SVG and checks that it draws exactly content's QR
// code with a quiet zone.
func checkSVG(t *testing.T, content string, out []byte) {
	t.Helper()
	var doc svgDoc
	if err := xml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("output is not XML: %v\n%s", err, out)
	}
	code, err := qr.Encode(content, level)
	if err != nil {
		t.Fatal(err)
	}
	n := code.Size + 2*QuietZone
	if want := fmt.Sprintf("0 0 %d %d", n, n); doc.ViewBox != want {
		t.Fatalf("viewBox = %q, want %q", doc.ViewBox, want)
	}
	if (code.Size-17)%4 != 0 || code.Size < 21 || code.Size > 177 {
		t.Fatalf("module count %d is not a QR version size", code.Size)
	}
	if doc.ShapeRendering != "crispEdges" {
		t.Errorf("shape-rendering = %q", doc.ShapeRendering)
	}
	if len(doc.Rects) != 1 || doc.Rects[0].Fill != "#fff" || doc.Rects[0].Width != strconv.Itoa(n) || doc.Rects[0].Height != strconv.Itoa(n) {
		t.Errorf("background = %+v, want one white %d×%d rect", doc.Rects, n, n)
	}
	if len(doc.Paths) != 1 || doc.Paths[0].Fill != "none" || doc.Paths[0].Stroke != "#000" || doc.Paths[0].StrokeWidth != "1" {
		t.Fatalf("want exactly one unfilled path stroked black 1 unit wide, got %+v", doc.Paths)
	}
	grid := rasterize(t, doc.Paths[0].D, n)
	for y := range n {
		for x := range n {
			want := code.Black(x-QuietZone, y-QuietZone) // false in the quiet zone
			if grid[y][x] != want {
				t.Fatalf("module %d,%d: drawn %v, want %v", x, y, grid[y][x], want)
			}
		}
	}
}

func TestSVGRoundTrip(t *testing.T) {
	for _, content := range []string{
		typicalURL,
		"x",
		"0123456789",
		"HELLO WORLD",
		"https://example.com/wechat/login?next=%2Fprotected&lang=zh-CN",
		"微信登录 <&\"'>",
		strings.Repeat("a", 500),
	} {
		out, err := SVG(content)
		if err != nil {
			t.Fatalf("SVG(%q): %v", content, err)
		}
		checkSVG(t, content, out)
	}
}

func TestSVGSize(t *testing.T) {
	out, err := SVG(typicalURL)
	if err != nil {
		t.Fatal(err)
	}
	// The package documentation promises under 2 KB for a login URL.
	if len(out) >= 2048 {
		t.Fatalf("SVG for a %d-char URL is %d bytes, want under 2048", len(typicalURL), len(out))
	}
	t.Logf("SVG for a %d-char URL: %d bytes", len(typicalURL), len(out))
}

func TestTooLong(t *testing.T) {
	if _, err := SVG(strings.Repeat("a", 5000)); err == nil {
		t.Fatal("SVG of 5000 bytes succeeded; QR codes hold less")
	}
	if _, err := PNG(strings.Repeat("a", 5000), 4); err == nil {
		t.Fatal("PNG of 5000 bytes succeeded")
	}
}

func TestPNG(t *testing.T) {
	const scale = 3
	out, err := PNG(typicalURL, scale)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	code, _ := qr.Encode(typicalURL, level)
	n := (code.Size + 2*QuietZone) * scale
	if b := img.Bounds(); b.Dx() != n || b.Dy() != n {
		t.Fatalf("PNG is %v, want %d×%d", b, n, n)
	}
	for y := range n {
		for x := range n {
			r, _, _, _ := img.At(x, y).RGBA()
			dark := r < 0x8000
			if want := code.Black(x/scale-QuietZone, y/scale-QuietZone); dark != want {
				t.Fatalf("pixel %d,%d dark=%v, want %v", x, y, dark, want)
			}
		}
	}
	for _, bad := range []int{0, -1, 65} {
		if _, err := PNG(typicalURL, bad); err == nil {
			t.Errorf("PNG with scale %d succeeded", bad)
		}
	}
}

// FuzzSVG checks that any content either fails cleanly or renders to an SVG
// that draws exactly its QR code.
func FuzzSVG(f *testing.F) {
	f.Add(typicalURL)
	f.Add("")
	f.Add("0")
	f.Add("\x00\xff")
	f.Add(strings.Repeat("9", 3000))
	f.Fuzz(func(t *testing.T, content string) {
		out, err := SVG(content)
		if err != nil {
			return
		}
		checkSVG(t, content, out)
	})
}

func BenchmarkSVG(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SVG(typicalURL); err != nil {
			b.Fatal(err)
		}
	}
}
