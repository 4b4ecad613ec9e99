package wechattest

import (
	"net/http"
)

// followerInfo is cgi-bin/user/info for a follower, with the fields WeChat
// stopped filling (nickname, sex, region, avatar) present but empty.
type followerInfo struct {
	Subscribe      int     `json:"subscribe"`
	OpenID         string  `json:"openid"`
	Nickname       string  `json:"nickname"`
	Sex            int     `json:"sex"`
	Language       string  `json:"language"`
	City           string  `json:"city"`
	Province       string  `json:"province"`
	Country        string  `json:"country"`
	HeadImgURL     string  `json:"headimgurl"`
	SubscribeTime  int64   `json:"subscribe_time"`
	UnionID        string  `json:"unionid,omitempty"`
	Remark         string  `json:"remark"`
	GroupID        int     `json:"groupid"`
	TagIDList      []int64 `json:"tagid_list"`
	SubscribeScene string  `json:"subscribe_scene"`
	QRScene        int64   `json:"qr_scene"`
	QRSceneStr     string  `json:"qr_scene_str"`
}

// nonFollowerInfo is all WeChat says about someone who does not follow.
type nonFollowerInfo struct {
	Subscribe int     `json:"subscribe"`
	OpenID    string  `json:"openid"`
	TagIDList []int64 `json:"tagid_list"`
}

func (p *Platform) handleUserInfo(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	tok, apiErr := p.checkToken(q.Get("access_token"), basicToken, stableToken)
	if apiErr == nil && !p.accountOf(tok.appID).canReadFollowers() {
		apiErr = errCode(48001)
	}
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	openid := q.Get("openid")
	if openid == "" {
		writeAPIError(w, errCode(41009))
		return
	}
	p.mu.Lock()
	s, ok := p.openids[openid]
	if !ok || s.appID != tok.appID {
		p.mu.Unlock()
		writeAPIError(w, errCode(40003))
		return
	}
	f := p.peekFollowLocked(s)
	unbound := p.apps[s.appID].Unbound
	p.mu.Unlock()

	if !f.subscribed {
		writeJSON(w, http.StatusOK, nonFollowerInfo{OpenID: openid, TagIDList: []int64{}})
		return
	}
	info := followerInfo{
		Subscribe:      1,
		OpenID:         openid,
		Language:       "zh_CN",
		SubscribeTime:  f.since.Unix(),
		TagIDList:      []int64{},
		SubscribeScene: f.scene,
		QRScene:        f.qrScene,
		QRSceneStr:     f.qrSceneStr,
	}
	if !unbound {
		info.UnionID = p.UnionID(s.user)
	}
	writeJSON(w, http.StatusOK, info)
}
