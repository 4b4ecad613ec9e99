package loginpage

import "testing"

func TestPickLang(t *testing.T) {
	for _, tc := range []struct{ header, want string }{
		{"", "en"},
		{"zh-CN,zh;q=0.9,en;q=0.8", "zh"},
		{"zh-TW", "zh"},
		{"ZH", "zh"},
		{"en-US,en;q=0.9", "en"},
		{"fr-FR,fr;q=0.9,zh;q=0.5,en;q=0.4", "zh"},
		{"en;q=0.5,zh;q=0.8", "zh"}, // quality wins over order
		{"zh;q=0.8,en;q=0.8", "zh"}, // on a tie, the first listed
		{"zh;q=0,en", "en"},         // q=0: not acceptable
		{"zh;q=0", "en"},
		{"zhx,en", "en"}, // not Chinese, just a prefix
		{"de, *", "en"},
		{"zh;q=abc", "zh"}, // a broken q counts as 1
		{"en;q=NaN,zh;q=0.1", "en"},
		{" zh-Hans-CN ; q=1 ", "zh"},
		{",,;;,", "en"},
	} {
		if got := pickLang(tc.header); got != tc.want {
			t.Errorf("pickLang(%q) = %q, want %q", tc.header, got, tc.want)
		}
	}
}

// FuzzPickLang: any Accept-Language header picks one of the two languages,
// without panicking.
func FuzzPickLang(f *testing.F) {
	for _, s := range []string{"", "zh-CN,zh;q=0.9", "en;q=0.5,zh;q=0.8", "zh;q=", ";q=1,", "zh;q=1e309", "\xff;q=0.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		if got := pickLang(header); got != "en" && got != "zh" {
			t.Fatalf("pickLang(%q) = %q", header, got)
		}
	})
}

// TestEveryMessageWorded: each language has each message, and the pages'
// own words, so no page ever shows an empty line.
func TestEveryMessageWorded(t *testing.T) {
	for _, lang := range []string{"en", "zh"} {
		if htmlLang[lang] == "" {
			t.Errorf("%s: no <html lang>", lang)
		}
		for m := MsgSuccess; m <= MsgUnavailable; m++ {
			if m.In(lang) == "" {
				t.Errorf("%s: message %d has no wording", lang, m)
			}
		}
		if tx := texts[lang]; tx.Title == "" || tx.Retry == "" || tx.Continue == "" || tx.Forbidden() != tx.Denied {
			t.Errorf("%s: page wording %+v", lang, tx)
		}
	}
	if MsgForbidden.In("en") != texts["en"].Denied || MsgSuccess.In("zh") != texts["zh"].Success {
		t.Error("a message the login page's script also shows is worded twice")
	}
}
