package wechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxOpenIDLen bounds openids accepted as input. Real ones are 28 bytes.
const maxOpenIDLen = 128

// Follower is what cgi-bin/user/info tells about a user of the Official
// Account. Since 2021 WeChat no longer reveals nickname, avatar, gender or
// region here, so they are not included.
type Follower struct {
	// Subscribed reports whether the user follows the account now. When it
	// is false WeChat returns nothing but the openid.
	Subscribed bool
	// OpenID identifies the user within this account.
	OpenID string
	// UnionID identifies the user across the apps of one Open Platform
	// account; empty unless the account is bound to one.
	UnionID string
	// Language is the user's language, such as "zh_CN".
	Language string
	// SubscribeTime is when the user last followed the account.
	SubscribeTime time.Time
	// SubscribeScene is how the user came to follow, e.g. "ADD_SCENE_QR_CODE".
	SubscribeScene string
	// QRScene and QRSceneStr are the scene of the QR code the user followed
	// through, when SubscribeScene is ADD_SCENE_QR_CODE.
	QRScene    int64
	QRSceneStr string
	// Remark is the operator's note on the user; TagIDs their tags.
	Remark string
	TagIDs []int64
}

type followerResponse struct {
	apiStatus
	Subscribe      int     `json:"subscribe"`
	OpenID         string  `json:"openid"`
	UnionID        string  `json:"unionid"`
	Language       string  `json:"language"`
	SubscribeTime  int64   `json:"subscribe_time"`
	SubscribeScene string  `json:"subscribe_scene"`
	QRScene        int64   `json:"qr_scene"`
	QRSceneStr     string  `json:"qr_scene_str"`
	Remark         string  `json:"remark"`
	TagIDs         []int64 `json:"tagid_list"`
}

// FollowerInfo fetches the account's view of the user openid
// (cgi-bin/user/info). A user who does not follow the account is not an
// error: the result has Subscribed false.
func (c *Client) FollowerInfo(ctx context.Context, openid string) (*Follower, error) {
	if err := checkOpaque("openid", openid, maxOpenIDLen); err != nil {
		return nil, err
	}
	const path = "cgi-bin/user/info"
	q := url.Values{}
	q.Set("openid", openid)
	q.Set("lang", "zh_CN")
	var resp followerResponse
	req := newAPIRequest(http.MethodGet, c.Endpoint.withDefaults().API, path, q, nil)
	if err := c.callWithToken(ctx, req, &resp); err != nil {
		return nil, err
	}
	if resp.OpenID != openid {
		return nil, fmt.Errorf("wechat: %s: response is about a different openid", path)
	}
	f := &Follower{
		Subscribed:     resp.Subscribe == 1,
		OpenID:         resp.OpenID,
		UnionID:        strings.TrimSpace(resp.UnionID),
		Language:       resp.Language,
		SubscribeScene: resp.SubscribeScene,
		QRScene:        resp.QRScene,
		QRSceneStr:     resp.QRSceneStr,
		Remark:         resp.Remark,
		TagIDs:         resp.TagIDs,
	}
	if resp.SubscribeTime > 0 {
		f.SubscribeTime = time.Unix(resp.SubscribeTime, 0)
	}
	return f, nil
}
