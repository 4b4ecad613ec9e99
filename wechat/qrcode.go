package wechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Limits of temporary parametric QR codes (cgi-bin/qrcode/create).
const (
	// MaxSceneLen is the longest scene_str WeChat accepts. Whether WeChat
	// counts bytes or characters is undocumented; scenes are limited to
	// visible ASCII, where the two agree.
	MaxSceneLen = 64
	// MinQRTTL and MaxQRTTL bound a temporary code's lifetime (30 days).
	MinQRTTL = time.Second
	MaxQRTTL = 2592000 * time.Second
)

// QRCode is a temporary QR code ticket.
type QRCode struct {
	// Ticket fetches the QR image (see Endpoint.ShowQRCodeURL). It is
	// base64 and contains '+', '/' and '='.
	Ticket string
	// URL is what the QR image encodes; render your own QR from it.
	URL string
	// ExpiresIn is the lifetime WeChat granted.
	ExpiresIn time.Duration
}

// qrCreateRequest is cgi-bin/qrcode/create's body. The scene must sit under
// action_info.scene: without that level WeChat accepts the call and every
// scan reports scene 0.
type qrCreateRequest struct {
	ExpireSeconds int64  `json:"expire_seconds"`
	ActionName    string `json:"action_name"`
	ActionInfo    struct {
		Scene struct {
			SceneStr string `json:"scene_str"`
		} `json:"scene"`
	} `json:"action_info"`
}

type qrCreateResponse struct {
	apiStatus
	Ticket        string `json:"ticket"`
	ExpireSeconds int64  `json:"expire_seconds"`
	URL           string `json:"url"`
}

// CreateTempQR creates a temporary QR code (QR_STR_SCENE) carrying scene.
// Scanning it makes WeChat push a subscribe event with EventKey
// "qrscene_"+scene, or a SCAN event with EventKey scene, to the account's
// server URL. scene must be 1 to MaxSceneLen visible ASCII characters; ttl
// must lie within MinQRTTL..MaxQRTTL and is rounded up to whole seconds.
// Both are checked before any network call.
func (c *Client) CreateTempQR(ctx context.Context, scene string, ttl time.Duration) (*QRCode, error) {
	if err := checkOpaque("QR scene", scene, MaxSceneLen); err != nil {
		return nil, err
	}
	if ttl < MinQRTTL || ttl > MaxQRTTL {
		return nil, invalidArg("QR lifetime %v outside %v..%v", ttl, MinQRTTL, MaxQRTTL)
	}
	secs := int64((ttl + time.Second - 1) / time.Second)

	var body qrCreateRequest
	body.ExpireSeconds = secs
	body.ActionName = "QR_STR_SCENE"
	body.ActionInfo.Scene.SceneStr = scene

	const path = "cgi-bin/qrcode/create"
	var resp qrCreateResponse
	req := newAPIRequest(http.MethodPost, c.Endpoint.withDefaults().API, path, nil, body)
	if err := c.callWithToken(ctx, req, &resp); err != nil {
		return nil, err
	}
	if resp.Ticket == "" || resp.URL == "" {
		return nil, fmt.Errorf("wechat: %s: response lacks ticket or url", path)
	}
	granted := time.Duration(resp.ExpireSeconds) * time.Second
	if resp.ExpireSeconds <= 0 || resp.ExpireSeconds > secs {
		// Absent (or nonsensical): assume what was asked for, never longer.
		granted = time.Duration(secs) * time.Second
	}
	return &QRCode{Ticket: resp.Ticket, URL: resp.URL, ExpiresIn: granted}, nil
}

// ShowQRCodeURL returns the address of the QR image for ticket. The ticket
// is query-escaped: it is base64, and an unescaped '+' would reach WeChat as
// a space.
func (e Endpoint) ShowQRCodeURL(ticket string) string {
	return e.withDefaults().MP + "/cgi-bin/showqrcode?ticket=" + url.QueryEscape(ticket)
}
