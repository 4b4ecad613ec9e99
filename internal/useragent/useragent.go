// Package useragent reads the little the login needs from a User-Agent
// header: whether it is WeChat's own browser, and a coarse description of a
// browser for the person asked to confirm a login.
//
// User-Agents are claims, not facts: nothing here is a security decision.
// InWeChat only chooses the smoother of two login flows, and a description
// only helps the scanner recognise (or not) the browser asking.
package useragent

import "strings"

// InWeChat reports whether ua is WeChat's own browser. WeCom (wxwork) also
// says MicroMessenger, but its users are not an Official Account's and its
// browser cannot authorize with one.
func InWeChat(ua string) bool {
	ua = strings.ToLower(ua)
	return strings.Contains(ua, "micromessenger") && !strings.Contains(ua, "wxwork")
}

// Phone reports whether ua is a phone's browser (WeChat's own included),
// where a QR code on the screen cannot be scanned by the same phone.
// Tablets count: WeChat on a tablet cannot scan its own screen either.
func Phone(ua string) bool {
	for _, token := range []string{"iPhone", "iPad", "iPod", "Android", "HarmonyOS", "Mobile Safari", "Windows Phone"} {
		if strings.Contains(ua, token) {
			return true
		}
	}
	return false
}

// browsers and systems are matched in order: Edge and Opera also say
// Chrome, Chrome also says Safari, and Android also says Linux.
var (
	browsers = []struct{ token, name string }{
		{"MicroMessenger", "WeChat"}, {"Edg/", "Edge"}, {"OPR/", "Opera"}, {"Firefox/", "Firefox"},
		{"Chrome/", "Chrome"}, {"Safari/", "Safari"},
	}
	systems = []struct{ token, name string }{
		{"Windows", "Windows"}, {"iPhone", "iPhone"}, {"iPad", "iPad"}, {"Android", "Android"},
		{"Mac OS X", "macOS"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"},
	}
)

// Describe is a coarse, human description of the browser ua names, such as
// "Chrome on Windows", or "a browser" when it names none it knows.
func Describe(ua string) string {
	browser := "a browser"
	for _, b := range browsers {
		if strings.Contains(ua, b.token) {
			browser = b.name
			break
		}
	}
	for _, o := range systems {
		if strings.Contains(ua, o.token) {
			return browser + " on " + o.name
		}
	}
	return browser
}
