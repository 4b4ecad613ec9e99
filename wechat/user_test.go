package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

func TestFollowerInfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want wechat.Follower
	}{
		{
			// The documented example, with its leading space in unionid.
			"documented example",
			`{"subscribe": 1, "openid": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "language": "zh_CN", "subscribe_time": 1382694957,
			 "unionid": " o6_bmasdasdsad6_2sgVt7hMZOPfL", "remark": "", "groupid": 0, "tagid_list":[128,2],
			 "subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": 98765, "qr_scene_str": ""}`,
			wechat.Follower{Subscribed: true, OpenID: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", UnionID: "o6_bmasdasdsad6_2sgVt7hMZOPfL",
				Language: "zh_CN", SubscribeTime: time.Unix(1382694957, 0), SubscribeScene: "ADD_SCENE_QR_CODE",
				QRScene: 98765, TagIDs: []int64{128, 2}},
		},
		{
			"observed 2024 answer with emptied profile keys",
			`{"subscribe":1,"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","nickname":"","sex":0,"language":"zh_CN","city":"","province":"","country":"","headimgurl":"","subscribe_time":1716533081,"remark":"","groupid":0,"tagid_list":[],"subscribe_scene":"ADD_SCENE_QR_CODE","qr_scene":0,"qr_scene_str":"login-xyz"}`,
			wechat.Follower{Subscribed: true, OpenID: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", Language: "zh_CN",
				SubscribeTime: time.Unix(1716533081, 0), SubscribeScene: "ADD_SCENE_QR_CODE", QRSceneStr: "login-xyz", TagIDs: []int64{}},
		},
		{
			"not following",
			`{"subscribe":0,"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","tagid_list":[]}`,
			wechat.Follower{OpenID: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", TagIDs: []int64{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				q := r.URL.Query()
				if r.URL.Path != "/cgi-bin/user/info" || q.Get("openid") != tt.want.OpenID || q.Get("lang") != "zh_CN" || q.Get("access_token") != testAccessToken {
					t.Errorf("request %s?%v", r.URL.Path, q)
				}
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			f, err := clientFor(wechat.Endpoint{API: srv.URL}, nil).FollowerInfo(context.Background(), tt.want.OpenID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*f, tt.want) {
				t.Errorf("Follower\n got %+v\nwant %+v", *f, tt.want)
			}
		})
	}
}

func TestFollowerInfoRejects(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"subscribe":1,"openid":"another-user"}`)
	}))
	defer srv.Close()
	c := clientFor(wechat.Endpoint{API: srv.URL}, nil)
	if _, err := c.FollowerInfo(context.Background(), testOpenID); err == nil || !strings.Contains(err.Error(), "different openid") {
		t.Errorf("answer about another user: err = %v", err)
	} else {
		assertNoSecrets(t, err)
	}
	for _, bad := range []string{"", "a b", strings.Repeat("o", 200), "o\n"} {
		if _, err := c.FollowerInfo(context.Background(), bad); !errors.Is(err, wechat.ErrInvalidArgument) {
			t.Errorf("FollowerInfo(%q): err = %v, want ErrInvalidArgument", bad, err)
		}
	}
}
