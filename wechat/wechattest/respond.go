package wechattest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// errmsgs holds WeChat's errmsg text for the codes this fake produces.
var errmsgs = map[int]string{
	-1:    "system error",
	40001: "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r",
	40002: "invalid grant_type",
	40003: "invalid openid",
	40013: "invalid appid",
	40014: "invalid access_token",
	40029: "invalid code",
	40030: "invalid refresh_token",
	40052: "invalid action name",
	40053: "invalid action info, please check document",
	40125: "invalid appsecret",
	40163: "code been used",
	41001: "access_token missing",
	41002: "appid missing",
	41003: "refresh_token missing",
	41004: "appsecret missing",
	41008: "missing code",
	41009: "missing openid",
	42001: "access_token expired",
	42002: "refresh_token expired",
	43001: "require GET method",
	43002: "require POST method",
	44002: "empty post data",
	45009: "reach max api daily quota limit, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r",
	47001: "data format error",
	48001: "api unauthorized",
	// WeChat's English wording of these four is not documented; these
	// paraphrase the Chinese descriptions of the access_token page.
	89501: "this ip is waiting for the admin's confirmation",
	89503: "this call needs the admin's confirmation, a confirmation message was sent to the admin",
	89506: "this ip was rejected by the admin twice within 24 hours and is blocked for 24 hours",
	89507: "this ip was rejected by the admin within the last hour and is blocked for 1 hour",
}

// apiError is a WeChat errcode answer.
type apiError struct {
	code int
	msg  string // empty means errmsgs[code]
}

func errCode(code int) *apiError { return &apiError{code: code} }

func (e *apiError) text() string {
	msg := e.msg
	if msg == "" {
		msg = errmsgs[e.code]
	}
	if msg == "" {
		msg = "system error"
	}
	return msg + ", rid: " + rid()
}

// writeAPIError answers with WeChat's errcode JSON and HTTP 200.
func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, http.StatusOK, struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{e.code, e.text()})
}

// writeJSON writes v the way WeChat does, with "/" escaped as "\/".
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own fixed types are marshalled; failing here is a bug.
		panic(fmt.Sprintf("wechattest: marshal response: %v", err))
	}
	// "/" occurs only inside JSON strings, where "\/" is a valid escape.
	b = bytes.ReplaceAll(b, []byte("/"), []byte(`\/`))
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// requireMethod answers 43001 or 43002 unless r uses method.
func requireMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	if method == http.MethodPost {
		writeAPIError(w, errCode(43002))
	} else {
		writeAPIError(w, errCode(43001))
	}
	return false
}

// rid returns a WeChat-style request id: three groups of 8 hex digits.
func rid() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%08x-%08x-%08x",
		binary.BigEndian.Uint32(b[0:]), binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:]))
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randString returns n random characters from alphabet (at most 256 long).
func randString(n int, alphabet string) string {
	var sb strings.Builder
	sb.Grow(n)
	limit := 256 - 256%len(alphabet) // rejection sampling keeps it uniform
	buf := make([]byte, n+n/4+8)
	for sb.Len() < n {
		_, _ = rand.Read(buf)
		for _, c := range buf {
			if int(c) < limit && sb.Len() < n {
				sb.WriteByte(alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return sb.String()
}

// randToken returns n random characters of [A-Za-z0-9_-].
func randToken(n int) string {
	b := make([]byte, (n*3+3)/4)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// randDigits returns n random decimal digits without a leading zero.
func randDigits(n int) string {
	return randString(1, "123456789") + randString(n-1, "0123456789")
}
